"""What every document of the spool has in common: frozen, exact when written, tolerant when read.

Documents are written by one version of a worker and read by others (an older page generator, a
newer client, a script in another language), so the two directions differ on purpose:

- **Writers never emit an undeclared field.** The models are `extra="forbid"`: a writer builds its
  document by keyword, and a field that no model declares is an error at once, not a silent
  addition to the format.
- **Readers tolerate unknown fields.** `read` validates with `extra="ignore"`: a newer writer may
  add fields, and an older reader shows what it understands instead of taking the file for
  damaged. A file that does not fit at all (not JSON, a wrong type, a missing required field) reads
  as missing, as a torn or hostile file always did.
- **Absent is not null.** A field without a value is None in the model and left out of the file,
  as the writers always did; the few fields that a writer gives as null on purpose (a stage's
  `exit_code`, a status's `outcome`) are named in `nullable` and written when given.

The JSON Schemas exported for clients (`schemas.py`) describe the reading side: they allow
additional properties.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, ValidationError, model_serializer

# A number that may be written as an integer or a float: kept as it was given (3 stays 3, not 3.0).
Number = int | float


class Document(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _leave_out_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        given = self.model_fields_set
        return {k: v for k, v in data.items() if v is not None or (k in self.nullable and k in given)}

    def dump(self) -> dict[str, Any]:
        """The document as it is written: JSON values, absent fields left out."""
        return self.model_dump(mode="json")

    @classmethod
    def read(cls, data: object) -> Self | None:
        """The document from JSON already parsed, or None when it does not fit (see above)."""
        try:
            return cls.model_validate(data, extra="ignore")
        except ValidationError:
            return None
