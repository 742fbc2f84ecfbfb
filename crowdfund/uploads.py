"""Uploaded files, kept in the database so every worker can serve them.

Images are checked by their content (Pillow decodes them), never by their
name; decompression bombs are refused before they are decoded.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from datetime import datetime

from PIL import Image, UnidentifiedImageError
from sqlalchemy import CheckConstraint, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from crowdfund.db import Base, UTCDateTime, utcnow
from crowdfund.errors import DomainError

IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}
#: Largest poster in pixels; a bigger one is refused, not decoded.
MAX_IMAGE_PIXELS = 40_000_000


class StoredFile(Base):
    __tablename__ = "stored_files"
    __table_args__ = (CheckConstraint("size_bytes >= 0", name="size_bytes"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Decided from the content, not from the uploaded name.
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


def check_image(data: bytes, max_bytes: int) -> str:
    """Return the content type of a PNG or JPEG, or raise DomainError."""
    if not data:
        raise DomainError("The file is empty.", field="poster")
    if len(data) > max_bytes:
        raise DomainError(
            f"The image is too large: at most {max_bytes // (1024 * 1024)} MB.", field="poster"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt = image.format
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise DomainError("The image has too many pixels.", field="poster")
                image.verify()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            OSError, SyntaxError, ValueError) as exc:
        raise DomainError("The file is not a PNG or JPEG image we can read.", field="poster") from exc
    if fmt not in IMAGE_TYPES:
        raise DomainError("Upload a PNG or JPEG image.", field="poster")
    return IMAGE_TYPES[fmt]


def store_file(session: Session, data: bytes, content_type: str) -> StoredFile:
    stored = StoredFile(
        content_type=content_type,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
    )
    session.add(stored)
    session.flush()
    return stored
