"""Uploaded files, kept in the database so every worker can serve them.

Images are checked by their content (Pillow decodes them), never by their
name; decompression bombs are refused before they are decoded, and what is
stored is the image re-encoded, without metadata or appended bytes.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from datetime import datetime

from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy import CheckConstraint, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, Session, mapped_column

from crowdfund.db import Base, UTCDateTime, utcnow
from crowdfund.errors import DomainError

IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}
#: Largest poster in pixels; a bigger one is refused, not decoded.
MAX_IMAGE_PIXELS = 40_000_000
# Pillow's own bomb guard at the same limit, for every image this process opens
# (it warns above the limit and refuses at twice it; both are refusals here).
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
#: PNG modes stored as they are; any other mode is converted to RGBA.
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"}


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


def _too_many_pixels() -> DomainError:
    return DomainError(
        f"The image has too many pixels: at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels "
        "(for example 5000 × 8000).",
        field="poster",
    )


def check_image(data: bytes, max_bytes: int) -> str:
    """Return the content type of a PNG or JPEG, or raise DomainError."""
    return clean_image(data, max_bytes)[1]


def clean_image(data: bytes, max_bytes: int) -> tuple[bytes, str]:
    """The picture of a PNG or JPEG, re-encoded, and its content type; or DomainError.

    Only the pixels survive: EXIF (camera, GPS position), text chunks, ICC
    profiles and anything appended after the image end are dropped, so a
    poster cannot carry a location or a second file. EXIF orientation is
    applied to the pixels first, so the poster still stands the right way up.
    """
    if not data:
        raise DomainError("The file is empty.", field="poster")
    if len(data) > max_bytes:
        raise DomainError(f"The image is too large: at most {max_bytes // (1024 * 1024)} MB.", field="poster")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt = image.format
                if fmt not in IMAGE_TYPES:
                    raise DomainError("Upload a PNG or JPEG image.", field="poster")
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise _too_many_pixels()
                image.load()
                picture = ImageOps.exif_transpose(image) or image
                cleaned = _encode(picture, fmt)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels() from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DomainError("The file is not a PNG or JPEG image we can read.", field="poster") from exc
    return cleaned, IMAGE_TYPES[fmt]


def _encode(picture: Image.Image, fmt: str) -> bytes:
    """Write the pixels alone: `info` (where Pillow keeps EXIF, ICC, text) is emptied first."""
    transparency = picture.info.get("transparency")
    if fmt == "JPEG":
        clean = picture.convert("RGB") if picture.mode not in ("RGB", "L") else picture.copy()
    else:
        clean = picture.copy() if picture.mode in _PNG_MODES else picture.convert("RGBA")
    clean.info = {}
    options: dict[str, object] = {}
    if fmt == "JPEG":
        options = {"quality": 90, "optimize": True}
    elif transparency is not None and clean.mode in ("P", "L", "RGB"):
        options = {"transparency": transparency}
    buffer = io.BytesIO()
    clean.save(buffer, fmt, **options)
    return buffer.getvalue()


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
