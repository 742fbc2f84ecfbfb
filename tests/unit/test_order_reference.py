from crowdfund.funding.orders import REFERENCE_ALPHABET, new_reference


def test_order_references_are_unguessable_and_easy_to_read() -> None:
    references = [new_reference() for _ in range(2000)]
    assert len(set(references)) == len(references)
    for reference in references:
        assert reference.startswith("RS-") and len(reference) == 15
        assert set(reference[3:]) <= set(REFERENCE_ALPHABET)
    # Every position draws from all 32 symbols (none is fixed or skewed to a few).
    for position in range(3, 15):
        assert {r[position] for r in references} == set(REFERENCE_ALPHABET)
