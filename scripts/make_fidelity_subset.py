#!/usr/bin/env python
"""Copy a compact subset of the golden bundle (../shared/golden) into tests/data/golden_subset.

The golden bundle holds the official SoulX-FlashTalk code's recorded outputs on tiny random-weight models in
the released file formats. It lives beside the checkout, so a fresh clone cannot prove the engine. This
script keeps the cases that fit a small budget, byte for byte, in the bundle's own layout (so the bundle's
compare.py and the tests read the subset exactly as they read the full bundle).

    python scripts/make_fidelity_subset.py                  # (re)write tests/data/golden_subset from ../shared/golden
    python scripts/make_fidelity_subset.py --check          # verify the in-repo subset (no source needed)
    python scripts/make_fidelity_subset.py --source DIR --dest DIR

Every file is checked against the sha256 pinned below, both in the source before copying and in the
destination after writing: the outputs must stay the official recordings, never something we regenerated.
The output is deterministic: same source, same bytes, same file list, same README.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

log = logging.getLogger("make_fidelity_subset")

CHECKOUT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = CHECKOUT.parent / "shared" / "golden"
DEFAULT_DEST = CHECKOUT / "tests" / "data" / "golden_subset"

#: Marks a folder this script owns, so a rerun may clear it without risking anything else.
README = "README.md"
SUMS = "SHA256SUMS"
#: The bundle's own README is kept verbatim under another name: README.md is the subset's provenance.
BUNDLE_README = "BUNDLE_README.md"
#: Identical files at least this large become symlinks; below it a link saves nothing worth its fragility.
LINK_MIN_BYTES = 64 * 1024

OFFICIAL_COMMIT = "688982e"
SEED = 7

#: Kept cases, with the reason each earns its bytes.
KEPT: dict[str, str] = {
    "dit_forward__a": "DiT forward (fp32 diffusers folder) with every debug intermediate, to locate a mismatch",
    "sampler__chunk0": "the 4-step denoising loop on the DiT",
    "stream_chunk__chunk0": "a whole generate() call: sampler, VAE decode, colour correction, motion re-encode"
                            " (its inputs are byte-identical to sampler__chunk0's and stored once)",
    "prepare__a": "conditioning: cond image, y, motion latent, shifted timesteps",
    "vae_encode__a": "reduced-width (dim 8) Wan2.1 VAE encode",
    "vae_decode__a": "reduced-width (dim 8) Wan2.1 VAE decode",
    "audio_embed__once": "loudness norm + feature extractor + wav2vec2 + 5-frame windows, whole clip",
    "audio_embed__stream": "the 8 s streaming buffer with the live window (start 167, end 200)",
    "wav2vec2_forward__a": "wav2vec2 in the safetensors layout (parametrizations weight norm)",
    "wav2vec2_forward__a_legacy_bin": "wav2vec2 in the legacy pytorch_model.bin layout (weight_g / weight_v)",
}

#: Left out, with what it would cost (bytes on disk) and where it is still covered.
DROPPED: dict[str, str] = {
    "dit_forward__b_bf16weights": "needs models/dit_bf16_sharded (4.7 MB) plus 2.5 MB of inputs; the BF16 sharded"
                                  " loading path is proven only with ../shared/golden",
    "sampler__chunk1": "4.7 MB more inputs; the chunk-to-chunk motion hand-off is proven only with ../shared/golden",
    "stream_chunk__chunk1": "shares sampler__chunk1's inputs; dropped with it",
}

#: Bundle-level files kept beside the cases: the comparison (tolerances live there), and the manifest of
#: the full bundle (model key tables the structure tests read).
TOP_LEVEL = ("compare.py", "manifest.json")

#: sha256 of every file copied, as recorded in ../shared/golden. A source that differs is refused.
PINNED: dict[str, str] = {
    "README.md": "aa93a6ea1eaf53b4b28fa32a035c0ade20340148b78feffdfe8f68334aba47ab",
    "compare.py": "91dbbe2d4896261d07f5a521f3b7596e71d1bb263c5db51df2b0be00ae5aa0c2",
    "manifest.json": "ab11970b345ec674be34ca5321a014ef437daf17821bfd885af107ce6f214adc",
    "cases/audio_embed__once/expected.safetensors": "35474585586f36cd4918da01f617b7ce7025ab480009cfd45c31e2bab54c2050",
    "cases/audio_embed__once/inputs.safetensors": "53d06a634c9c9109702f3d8976e716c478977e5e0f40a34748ad6957a8b740cb",
    "cases/audio_embed__once/meta.json": "f837ef2ea4880bcf703bd6c139ed2415e64177d88cea7e6a6dd8adb6bc90abe9",
    "cases/audio_embed__stream/expected.safetensors": "eff018ccb230ed87f7d1f38dc5b943348b6d4c39e917e6cc4900ae7259a77f67",
    "cases/audio_embed__stream/inputs.safetensors": "0c25fe3f88fa016565d45c16ed1d05b7c71c009612769b9db6a9d143fdf2d1ce",
    "cases/audio_embed__stream/meta.json": "c86efc6e8d9e12bc6042025cddf1ee3ccd70b914604581bcb9aba19a48fed7a7",
    "cases/dit_forward__a/expected.safetensors": "e2244468df4f299305f93a4b2c41256182b1e4f994fbfc85d40022c6776828ee",
    "cases/dit_forward__a/inputs.safetensors": "1240c5ab6a68df2a17f7282b59eb0c4ee77f6c487c57e3aa76d35f3793f4b4db",
    "cases/dit_forward__a/meta.json": "2d3b2da1afed69d6d844ab26247db9cb9e9338e6b16cc5becbd2a8644cf67e1f",
    "cases/prepare__a/expected.safetensors": "4741aa40be4fd6e4b464d9847ced9499a67628d4ea319b4aa2cecee8544e51db",
    "cases/prepare__a/inputs.safetensors": "ce8b808842df56aac2d0f01ceb4b5569a1ca7e442a31dea51e1cc2fd11f8d734",
    "cases/prepare__a/meta.json": "ff25f3b384c3fbbc9f6b9de514aa21ae11740f50b343dc6595aee830c8cadf4f",
    "cases/sampler__chunk0/expected.safetensors": "6a7339c80e5d02ccb53708a82056b2bd485bb3058f2badd66f6de6f1973e95f8",
    "cases/sampler__chunk0/inputs.safetensors": "03e5a46e54fc3735d54423c73cf5132fd5fc4bd8c7f83a6e831cf4aa8199d1d7",
    "cases/sampler__chunk0/meta.json": "c2d2c4029268bbb72005e5e9f70402423504dcb8b5fea0a088b049eac1476bf0",
    "cases/stream_chunk__chunk0/expected.safetensors": "9388fcfdf4110feb16c3e82d2a26829bd1cce7feca67c6238be4f3f4ed1f47b2",
    "cases/stream_chunk__chunk0/inputs.safetensors": "03e5a46e54fc3735d54423c73cf5132fd5fc4bd8c7f83a6e831cf4aa8199d1d7",
    "cases/stream_chunk__chunk0/meta.json": "b441b609789bac705e611b55809d38c0aaba9a66279b3cf3d1aa140f5da73837",
    "cases/vae_decode__a/expected.safetensors": "d091f59fdb6dba3749d87e7be2ad6d861f1e5d16dfa6be72ce29d6fa10697b80",
    "cases/vae_decode__a/inputs.safetensors": "32553d279584d6758a19c5140fe5ac6ace89a6afb75a2113404f99375168bdbf",
    "cases/vae_decode__a/meta.json": "4a23db84fa6433594ef82ef9e8a7af1e8a9f55e80b10ddcbe868118a6d766277",
    "cases/vae_encode__a/expected.safetensors": "17e88306ad9480872e6b75dc92d766c617270248b6888f55fdf68cd257246bee",
    "cases/vae_encode__a/inputs.safetensors": "e8e7d1ab419046ebc6046a859ba5ab84f6819440a49a90976e07964b0549e454",
    "cases/vae_encode__a/meta.json": "3214de830cb9f3b5c04159edd72cf2bd18c49732c2e1ae8b76c389f42f6cadaa",
    "cases/wav2vec2_forward__a/expected.safetensors": "fc73c275537f04db074d3b49e15a3e49beb865fe70306bf6df4107453ebc4dad",
    "cases/wav2vec2_forward__a/inputs.safetensors": "f7f41f0aa22c25ca489cafaecafa98b167c3becd3f334ccf3a64fa108f5bb445",
    "cases/wav2vec2_forward__a/meta.json": "76b76ea63d541b91c5d99b53fd6f4872a08880521c5afa9482a3899bbe30de82",
    "cases/wav2vec2_forward__a_legacy_bin/expected.safetensors":
        "864aa96be335cd0a9c8c4ea779011002b5eb398613673e3ea634c3c51f995ff3",
    "cases/wav2vec2_forward__a_legacy_bin/inputs.safetensors":
        "f7f41f0aa22c25ca489cafaecafa98b167c3becd3f334ccf3a64fa108f5bb445",
    "cases/wav2vec2_forward__a_legacy_bin/meta.json": "1e1f23602063e53467b36d2e795c60f3b3a0291e1c1b7b38e414a91c859e9092",
    "models/dit/config.json": "54bf73c9b9441efc5d7b33c149f54be35f014fbde3404f0671f0fac296e4aa12",
    "models/dit/diffusion_pytorch_model.safetensors": "07d21eb36bd5e2f5551ced715d5df75154e500b91d03aad97c45917883232479",
    "models/vae_dim8/Wan2.1_VAE.pth": "6627fe09b2f256eebfcb855a82c32346d121284fa1472f15c171b61ec0db5bc0",
    "models/vae_dim8/vae_config.json": "9091a4d86ed8f3b9d92373dfe032f9e103b2313fa54f7e993ec12ae7fa0debf4",
    "models/wav2vec2/config.json": "4c5d054a6a2efeb2f910a918c0a40081da672e4bb5b77c80e95a32329edbdaba",
    "models/wav2vec2/model.safetensors": "c1edda60704ff6d98875e0e42662932af0c3f966c9608040889e537e8e1b50e7",
    "models/wav2vec2/preprocessor_config.json": "8cdfd65ff4115423185a1512bdae100e2e0cd744f5b322417429944aaafd0827",
    "models/wav2vec2_legacy_bin/config.json": "4c5d054a6a2efeb2f910a918c0a40081da672e4bb5b77c80e95a32329edbdaba",
    "models/wav2vec2_legacy_bin/preprocessor_config.json":
        "8cdfd65ff4115423185a1512bdae100e2e0cd744f5b322417429944aaafd0827",
    "models/wav2vec2_legacy_bin/pytorch_model.bin": "4662546d34dacc4df045d8a2a929a4c4722afc2d7a0bf7fcbd309ecd9a78f5f5",
}


class SubsetError(RuntimeError):
    """The source or the written subset does not match the pinned sha256s."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_folders(source: Path, cases: list[str]) -> list[str]:
    """The model folders the kept cases name (a .pth path stands for its folder: vae_config.json sits there)."""
    folders: set[str] = set()
    for case in cases:
        meta = json.loads((source / "cases" / case / "meta.json").read_text())
        for rel in meta["models"].values():
            folder = Path(rel) if (source / rel).is_dir() else Path(rel).parent
            folders.add(folder.as_posix())
    return sorted(folders)


def planned_files(source: Path) -> list[str]:
    """Every bundle-relative path to copy, sorted (the order decides which duplicate is the real file)."""
    cases = sorted(KEPT)
    files = [*TOP_LEVEL]
    for case in cases:
        files += sorted(f"cases/{case}/{p.name}" for p in (source / "cases" / case).iterdir() if p.is_file())
    for folder in model_folders(source, cases):
        files += sorted(f"{folder}/{p.name}" for p in (source / folder).iterdir() if p.is_file())
    return sorted(files)


def verify_pinned(root: Path, rel: str, expected_name: str | None = None) -> str:
    """sha256 of ``root/rel`` (symlinks followed), which must equal the pin of ``expected_name or rel``."""
    name = expected_name or rel
    if name not in PINNED:
        raise SubsetError(f"{name}: no pinned sha256 (update PINNED deliberately if the bundle changed)")
    path = root / rel
    if not path.is_file():
        raise SubsetError(f"{path}: missing (a checkout without symlink support breaks the de-duplicated files)")
    got = sha256(path)
    if got != PINNED[name]:
        raise SubsetError(f"{path}: sha256 {got} != pinned {PINNED[name]}")
    return got


def clear_dest(dest: Path) -> None:
    """Empty a folder this script wrote before; refuse anything else so a wrong --dest destroys nothing."""
    if not dest.exists():
        return
    if any(dest.iterdir()) and not (dest / SUMS).is_file():
        raise SubsetError(f"{dest} is not empty and has no {SUMS}: not a folder this script wrote")
    shutil.rmtree(dest)


def write_file(source: Path, dest: Path, rel: str, first_with_hash: dict[str, str]) -> None:
    """Copy ``rel`` byte for byte, or link it to an identical file already written (git and disk keep one copy)."""
    digest = PINNED[rel]
    target = dest / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    original = first_with_hash.get(digest)
    if original is None or (source / rel).stat().st_size < LINK_MIN_BYTES:
        shutil.copyfile(source / rel, target)
        os.chmod(target, 0o644)  # the bundle is read-only; the copy must be rewritable by the next run
        first_with_hash[digest] = rel
    else:
        target.symlink_to(os.path.relpath(dest / original, target.parent))


def human(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def render_readme(dest: Path, files: list[str]) -> str:
    """The provenance README, generated so the sha256 table can never drift from the data."""
    unique = sum((dest / f).stat().st_size for f in files if not (dest / f).is_symlink())
    rows = []
    for rel in files:
        path = dest / rel
        stored = f"link to `{os.readlink(path)}`" if path.is_symlink() else human(path.stat().st_size)
        rows.append(f"| `{rel}` | {stored} | `{PINNED[rel]}` |")
    bundle_readme = f"| `{BUNDLE_README}` | {human((dest / BUNDLE_README).stat().st_size)} | `{PINNED['README.md']}` |"
    kept = "\n".join(f"- `{case}`: {why}." for case, why in sorted(KEPT.items()))
    dropped = "\n".join(f"- `{case}`: {why}." for case, why in sorted(DROPPED.items()))
    return f"""# Golden subset: engine fidelity inside the repository

**Generated by `scripts/make_fidelity_subset.py`; do not edit by hand.**

A byte-for-byte subset of the golden reference bundle (`../shared/golden`), so that a fresh clone proves the
engine against the official SoulX-FlashTalk release without the shared folder.

## Provenance

- Source: the golden bundle `../shared/golden` (its README is kept verbatim as `{BUNDLE_README}`).
- Recorded from the official SoulX-FlashTalk inference code, commit `{OFFICIAL_COMMIT}`
  ("add Live Streaming & Video Podcast"), on CPU in float32, seed {SEED}, with tiny random-weight models saved
  in the released file formats (DiT diffusers folder, Wan2.1 VAE `.pth` at base width 8, wav2vec2 safetensors
  and legacy `.bin`).
- Every file is a verbatim copy: the expected outputs are the official recordings, never regenerated by this
  project. `manifest.json` is the full bundle's manifest, so it also lists the cases left out below.
- Byte-identical large files are stored once: the later path is a relative symlink to the first
  (`stream_chunk__chunk0` and `sampler__chunk0` share their inputs, and so do the two `wav2vec2_forward` cases).
  Git would store one blob anyway; the link also keeps the checkout small.

## Cases kept ({len(KEPT)} of {len(KEPT) + len(DROPPED)})

{kept}

Left out (the tests that need them skip, naming `../shared/golden`):

{dropped}

The budget: the fp32 DiT (9.4 MB), the sampler inputs (4.7 MB) and the VAE (3.8 MB) are the floor for covering
DiT, sampler and VAE together; everything else kept adds about 7 MB.

## Use

- The tests find the bundle through `tests/engine/golden_support.py`: `$SOULX_GOLDEN_DIR` when set (a path, or
  `none` for no bundle), else `../shared/golden` when present, else this folder.
- The bundle's own comparison works on this folder too, either copy of `compare.py`:

  ```bash
  python tests/data/golden_subset/compare.py \\
    --cmd "python -m engine.refcheck {{task}} --inputs {{inputs}} --outputs {{outputs}} --request {{request}}"
  python ../shared/golden/compare.py --bundle tests/data/golden_subset --cmd "..."
  ```

## Regenerate and verify

```bash
python scripts/make_fidelity_subset.py           # rewrite this folder from ../shared/golden (sha256-checked)
python scripts/make_fidelity_subset.py --check   # verify this folder alone
sha256sum -c {SUMS}                          # the same check, from inside this folder
```

## Files

{human(unique)} on disk in {len(files) + 2} files (links not counted twice).

| file | stored | sha256 |
| --- | --- | --- |
{chr(10).join(rows)}
{bundle_readme}
"""


def write_subset(source: Path, dest: Path) -> list[str]:
    """Verify the source against the pins, copy, then verify what was written."""
    if not (source / "compare.py").is_file():
        raise SubsetError(f"no golden bundle at {source}")
    files = planned_files(source)
    for rel in [*files, "README.md"]:
        verify_pinned(source, rel)
    clear_dest(dest)
    first_with_hash: dict[str, str] = {}
    for rel in files:
        write_file(source, dest, rel, first_with_hash)
    shutil.copyfile(source / "README.md", dest / BUNDLE_README)
    os.chmod(dest / BUNDLE_README, 0o644)
    (dest / SUMS).write_text(
        "".join(f"{PINNED[rel]}  {rel}\n" for rel in files) + f"{PINNED['README.md']}  {BUNDLE_README}\n")
    (dest / README).write_text(render_readme(dest, files))
    check_subset(dest)
    return files


def check_subset(dest: Path) -> int:
    """Every file in SHA256SUMS is present with its pinned hash, and nothing unlisted hides in the folder."""
    listed: list[str] = []
    for line in (dest / SUMS).read_text().splitlines():
        digest, rel = line.split("  ", 1)
        pinned_name = "README.md" if rel == BUNDLE_README else rel
        if PINNED.get(pinned_name) != digest:
            raise SubsetError(f"{SUMS} entry for {rel} disagrees with the pinned sha256")
        verify_pinned(dest, rel, pinned_name)
        listed.append(rel)
    present = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() or p.is_symlink()}
    extra = present - set(listed) - {README, SUMS}
    if extra:
        raise SubsetError(f"files not in {SUMS}: {sorted(extra)}")
    return len(listed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the full golden bundle")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="the in-repo subset folder")
    parser.add_argument("--check", action="store_true", help="only verify --dest against the pinned sha256s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.check:
            log.info("%s: %d files match their pinned sha256", args.dest, check_subset(args.dest))
        else:
            files = write_subset(args.source, args.dest)
            log.info("wrote %d files (%d cases) to %s; all sha256 verified", len(files), len(KEPT), args.dest)
    except SubsetError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
