"""Posters are re-encoded on upload: what is stored and served is the picture
only (no EXIF, no GPS position, nothing appended after the image), images with
too many pixels are refused with a message, and a poster over the size limit
brings back the filled-in form with a message."""

from __future__ import annotations

import gc
import io
import os

import pytest
from flask import Flask
from PIL import Image
from sqlalchemy import select

from crowdfund.films.models import Film
from crowdfund.uploads import MAX_IMAGE_PIXELS, StoredFile
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, make_studio_user, png_bytes
from tests.http.test_films import _form

GPS_IFD = 0x8825


def jpeg_with_gps() -> bytes:
    image = Image.new("RGB", (60, 90), (10, 80, 160))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)})
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    data = buffer.getvalue()
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(GPS_IFD)  # the test file really carries a position
    return data


def noise_png(size_bytes: int) -> bytes:
    """A real PNG of about `size_bytes` (noise does not compress)."""
    side = int((size_bytes / 3) ** 0.5) + 1
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def tall_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def upload(client: Client, poster: bytes, name: str = "poster.png", **fields: str):  # type: ignore[no-untyped-def]
    return client.post_form(
        "/studio/films/new",
        _form(poster=(io.BytesIO(poster), name), **fields),
        content_type="multipart/form-data",
    )


def stored_poster(db: CheckSession, title: str = "Harbour Lights") -> bytes:
    db.reread()
    film = db.scalar(select(Film).where(Film.title == title))
    return db.get(StoredFile, film.poster_id).data


@pytest.fixture
def studio_client(client: Client, db: CheckSession) -> Client:
    client.login(make_studio_user(db).email, PASSWORD)
    return client


def test_exif_and_gps_are_gone_after_upload(studio_client: Client, db: CheckSession) -> None:
    assert upload(studio_client, jpeg_with_gps(), "poster.jpg").status_code == 303
    data = stored_poster(db)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG" and image.size == (60, 90)
        assert not image.getexif() and not image.getexif().get_ifd(GPS_IFD)
        assert "exif" not in image.info
    assert b"SpyCam" not in data and b"Exif" not in data


def test_bytes_appended_after_the_image_are_gone(studio_client: Client, db: CheckSession) -> None:
    smuggled = png_bytes() + b"<?php system($_GET['c']); ?>" + b"PK\x03\x04 a zip file"
    assert upload(studio_client, smuggled).status_code == 303
    data = stored_poster(db)
    assert data.endswith(b"IEND\xaeB`\x82") and b"php" not in data and b"PK\x03\x04" not in data
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size == (40, 60)


@pytest.mark.parametrize(("width", "height"), [(7_000, 7_000), (12_000, 12_000), (1, MAX_IMAGE_PIXELS + 1)])
def test_images_with_too_many_pixels_are_refused_with_a_message(
    studio_client: Client, db: CheckSession, width: int, height: int
) -> None:
    response = upload(studio_client, tall_png(width, height), title="Huge Poster Film")
    text = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "too many pixels" in text and "40 megapixels" in text
    assert 'value="Huge Poster Film"' in text
    db.reread()
    assert db.scalar(select(Film)) is None


def test_a_3_mb_poster_gives_back_the_filled_in_form_with_a_message(
    studio_client: Client, db: CheckSession
) -> None:
    response = upload(studio_client, noise_png(3 * 1024 * 1024), title="Kept Title", logline="Kept logline.")
    text = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "The image is too large: at most 2 MB." in text
    assert 'value="Kept Title"' in text and 'value="Kept logline."' in text and "Long story." in text
    db.reread()
    assert db.scalar(select(Film)) is None


# Werkzeug leaves its spooled upload file open when it refuses a body for size.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_poster_over_the_request_limit_gives_the_form_not_an_error_page(
    studio_client: Client, app: Flask
) -> None:
    huge = noise_png(app.config["MAX_CONTENT_LENGTH"] + 1024)
    response = upload(studio_client, huge)
    text = response.get_data(as_text=True)
    assert response.status_code == 413
    assert (
        "The poster is too large: at most 2 MB." in text
        and 'name="title"' in text
        and 'name="poster"' in text
    )
    del response, huge
    gc.collect()
