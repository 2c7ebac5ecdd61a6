"""Pack a root filesystem directory as a one-layer OCI image archive that `ctr images import` reads.

No registry is reachable from the harness's machines, so the images its kubelet runs (the pause
image, the Ray image) are built from local directories and imported into containerd.

Usage: ociimage.py ROOTFS OUT.tar --name REF [--entrypoint ARG ...] [--env K=V ...]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import tarfile
import tempfile
from pathlib import Path

logger = logging.getLogger("ociimage")


def _blob(out: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    """Add ``data`` as a content-addressed blob; its digest and size."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest.split(":", 1)[1])
    info.size = len(data)
    out.addfile(info, io.BytesIO(data))
    return digest, len(data)


def _layer(rootfs: Path, spool: Path) -> Path:
    """The root filesystem as an uncompressed tar layer (numeric owners kept, as in the tree)."""
    layer = spool / "layer.tar"
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.iterdir()):
            tar.add(path, arcname=path.name)
    return layer


def pack(rootfs: Path, archive: Path, name: str, entrypoint: list[str], env: list[str]) -> None:
    """Write ``archive``: an OCI image layout (index.json naming ``name``) of one layer."""
    with tempfile.TemporaryDirectory(dir=archive.parent) as spool:
        layer = _layer(rootfs, Path(spool))
        sha = hashlib.sha256()
        with layer.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                sha.update(chunk)
        layer_digest, layer_size = "sha256:" + sha.hexdigest(), layer.stat().st_size
        with tarfile.open(archive, "w") as out:
            info = out.gettarinfo(str(layer), "blobs/sha256/" + sha.hexdigest())
            with layer.open("rb") as f:
                out.addfile(info, f)
            config = {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Entrypoint": entrypoint or None, "Env": env, "WorkingDir": "/"},
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            }
            config_digest, config_size = _blob(out, json.dumps(config).encode())
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": config_size,
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest,
                        "size": layer_size,
                    }
                ],
            }
            manifest_digest, manifest_size = _blob(out, json.dumps(manifest).encode())
            index = {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": manifest_digest,
                        "size": manifest_size,
                        "annotations": {
                            "io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name,
                        },
                        "platform": {"architecture": "amd64", "os": "linux"},
                    }
                ],
            }
            for member, data in (
                ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
                ("index.json", json.dumps(index).encode()),
            ):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
    logger.info("%s: %s (%d MB)", archive, name, archive.stat().st_size >> 20)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="ociimage: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rootfs", type=Path)
    p.add_argument("archive", type=Path)
    p.add_argument("--name", required=True, help="the image reference, e.g. localhost/pause:1")
    p.add_argument("--entrypoint", nargs="*", default=[])
    p.add_argument("--env", action="append", default=[])
    a = p.parse_args()
    pack(a.rootfs, a.archive, a.name, a.entrypoint, a.env)


if __name__ == "__main__":
    main()
