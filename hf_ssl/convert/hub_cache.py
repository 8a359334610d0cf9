"""Put a local model folder into the Hugging Face cache, so that its Hub id loads offline.

For air-gapped machines: copy a saved model there, add it under the id it has on the Hub, and
`AutoModel.from_pretrained("org/name")` or `pipeline(..., model="org/name")` work with `HF_HUB_OFFLINE=1`, exactly
as after a download. The layout is the one `huggingface_hub` writes:

    <cache>/models--org--name/
        blobs/<sha256>                                   file contents, one per distinct file
        snapshots/<commit>/<path> -> ../../blobs/<sha256>  relative symlinks (copies where there are none)
        refs/main                                        the commit id of `main`
"""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import constants
from huggingface_hub.file_download import repo_folder_name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _link_or_copy(blob: Path, target: Path) -> None:
    """A relative symlink from the snapshot to the blob, as `huggingface_hub` makes; a copy without symlinks."""
    target.unlink(missing_ok=True)
    try:
        target.symlink_to(os.path.relpath(blob, target.parent))
    except OSError:
        shutil.copyfile(blob, target)


def add_to_hub_cache(
    folder: str | os.PathLike,
    repo_id: str,
    cache_dir: str | os.PathLike | None = None,
    revision: str = "main",
    repo_type: str = "model",
) -> Path:
    """
    Add every file under `folder` to the Hub cache as `repo_id` at branch `revision`; returns the snapshot folder.

    `cache_dir` defaults to `HF_HUB_CACHE`. Blobs are named by the SHA-256 of their content (the Hub's etag of LFS
    files); the commit id is a hash of the file names and contents, so adding the same folder twice is a no-op and
    a changed folder gets a new snapshot that `revision` then points to.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    if repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise ValueError(f"repo_id must look like 'org/name' or 'name', got {repo_id!r}")
    files = sorted(path for path in folder.rglob("*") if path.is_file() and ".cache" not in path.parts)
    if not files:
        raise ValueError(f"{folder} has no files")

    storage = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    hashes = {path.relative_to(folder).as_posix(): _sha256(path) for path in files}
    commit = hashlib.sha1("".join(f"{name}\0{digest}\n" for name, digest in hashes.items()).encode()).hexdigest()

    snapshot = storage / "snapshots" / commit
    for name, digest in hashes.items():
        blob = storage / "blobs" / digest
        if not blob.exists():
            with open(folder / name, "rb") as source, tempfile.NamedTemporaryFile(dir=blob.parent, delete=False) as staging:
                shutil.copyfileobj(source, staging)
            os.replace(staging.name, blob)
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(blob, target)

    ref = storage / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    staging_ref = ref.with_name(f".{ref.name}.tmp")
    staging_ref.write_text(commit)
    os.replace(staging_ref, ref)
    return snapshot
