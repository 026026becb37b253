"""FeatureStore: per-modality embeddings on disk (HDF5), patient-indexed, atomic writes.

In parts: ``store_format`` (the on-disk format, paths and provenance), ``store_write``
(atomic batched writes, provenance checks, importers, packing), ``store_read`` (fast
loading, and the join of stored features with labels or a CHIMERA folder by patient id);
other tools' per-patient feature files are read by ``io.feature_files``. Labels are not
the store's: ``store_read.labelled_store_cohort`` joins a labels CSV for the ``store:``
data source.

Layout: one file per modality, ``root/{modality}.h5``. File attributes record the
provenance (``encoder``, ``checksum``, ``dim``, ``dtype``, ``kind`` = ``vector`` | ``bag``);
each patient is a group ``/patients/{quoted id}`` holding ``features`` ((D,) or (K, D),
contiguous, float16 or float32), optionally ``coords`` ((K, 2) int64), and the attribute
``complete=True`` written last. Only complete patients count as stored, which lets an
interrupted extraction resume where it stopped.

Atomicity trade-off: HDF5 cannot be updated in place crash-safely (a crash while its
metadata is being rewritten can corrupt the whole file). Every write therefore copies the
modality file to a temporary file beside it, appends there and ``os.replace``-s it onto
the original: a crash leaves the previous file intact and no half-written patient. The
copy costs O(file size), so writing 1,000 patients one by one would copy the file 1,000
times; ``write_many`` writes a whole batch with one copy (first batch: no copy at all).
Extraction should write in batches of tens of patients. One writer per modality at a
time: writes hold an advisory lock (``root/.{modality}.lock``) so two processes cannot
lose each other's patients.

Packed layout (``pack``, run at the end of extraction): per-patient datasets cost one
HDF5 read each (~0.4 ms), which dominates loading 1,000 bags. ``pack(modality)`` rewrites
the file (a new file, so the space of old datasets is reclaimed; atomic, under the writer
lock) so that every complete patient lives in one row of

- ``/packed/features``: N × Kmax × D (bags, zero-padded) or N × D (vectors), stored dtype,
  contiguous layout, storage allocated: ``load`` memory-maps it at ``get_offset()``;
- ``/packed/lengths`` (N int64: bag sizes; 1 for vectors), ``/packed/patients`` (N ids,
  sorted like ``patients()``);
- ``/packed/coords`` (N × Kmax × 2 int64, zero-padded) and ``/packed/has_coords`` (N bool),
  only when some patient has coords.

The group ``/patients/{key}`` stays (attributes unchanged, ``complete=True``) but holds the
attribute ``packed_row`` instead of datasets. A later write gives a new or overwritten
patient an ordinary group with datasets (no ``packed_row``); its old row is simply ignored
until the next ``pack``. The groups are authoritative, with one shortcut: ``/packed`` has
the attribute ``exact=True`` while the groups are exactly the pack (row i is the i-th
patient, nobody else is stored); then ``load`` trusts ``/packed/patients`` and opens no
group. Every patient write through ``write_many`` deletes ``exact``; a tool editing a
packed file by other means must delete it too (or re-``pack``). ``pack`` drops groups
not flagged complete. Files without ``/packed`` (older ones, or never packed) read per
patient as before.

Reading (``load``, ``store_read.cohort_from_store``) opens each file once. Packed patients are copied with one
``preadv`` (same dtype) or one torch copy from the memory map (with the cast) per run of
consecutive rows, so loading everyone in order is one large read or copy; when nothing needs copying at all (every patient of
the pack, in order, stored dtype, no subsampling, no ``out``) ``load`` returns the read-only
map itself (zero copy). Either way ``load`` first asks the kernel to read the needed rows
in the background (a cold memory map otherwise reads in small page-fault chunks).
Unpacked patients are read with one low-level HDF5 read each, straight into a
preallocated padded array (or into a small scratch buffer, then a vectorised torch cast
when float16 is loaded as float32). ``load(out=...)`` fills a caller's buffer (e.g. a
reused or pinned one). See benchmarks/bench_store.py for figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modalsurv.errors import DataError
from modalsurv.io.store_format import StoreFiles
from modalsurv.io.store_read import LoadedModality, StoreReader
from modalsurv.io.store_write import StoreWriter

__all__ = ["EXTRACTION_RECORD", "FeatureStore", "LoadedModality", "StoreFiles",
           "read_extraction_record"]


EXTRACTION_RECORD = "extraction.json"


def read_extraction_record(folder: str | Path) -> dict[str, Any] | None:
    """The ``extraction.json`` that ``modalsurv extract`` writes into a store (and a run
    folder copies): how the features were made. None when absent."""
    path = Path(folder) / EXTRACTION_RECORD
    if not path.is_file():
        return None
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"corrupt extraction record: {exc}", path=path) from None
    if not isinstance(out, dict):
        raise DataError("an extraction record must be a JSON object", path=path)
    return out


class FeatureStore(StoreReader, StoreWriter):
    """Embeddings per modality and patient under ``root`` (see module docstring): the
    reading side (``load``) from :mod:`~modalsurv.io.store_read`, the writing side
    (``write_many``, ``pack``, ``set_meta``, importers) from :mod:`~modalsurv.io.store_write`."""
