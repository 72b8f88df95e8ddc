"""The CLI's contract on bad input, case by case; and unusual-but-valid images that must render.

Every bad input must give exactly one stderr line starting with `error: `, exit status 2, no
traceback, no output file and no stray temporary file. The CLI runs in-process through
`hiresnst.cli.main` (tests/test_cli.py checks the same contract in a real subprocess).
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import badinputs as B
import numpy as np
import pytest
from PIL import Image

from hiresnst import imageio, sharding
from hiresnst.cli import main

FAST = ["--size", "32", "--steps", "1", "--weights", "random", "-q"]


@dataclass
class Workspace:
    """A fresh directory with a good content and style image and an empty output directory."""

    root: Path
    content: Path = field(init=False)
    style: Path = field(init=False)
    out_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        (self.root / "in").mkdir()
        self.out_dir = self.root / "out"
        self.out_dir.mkdir()
        self.content = B.rgb_png(self.root / "in" / "content.png")
        self.style = B.rgb_png(self.root / "in" / "style.png", 32, 32)

    def file(self, name: str) -> Path:
        return self.root / "in" / name

    @property
    def output(self) -> Path:
        return self.out_dir / "result.png"


@dataclass
class Call:
    argv: list[str]
    output: Path
    env: dict[str, str] = field(default_factory=dict)  # environment variables to set


def run_args(
    ws: Workspace,
    *extra: str,
    content: Path | None = None,
    styles: list[Path] | None = None,
    output: Path | None = None,
    weights: str = "random",
) -> Call:
    output = ws.output if output is None else output
    argv = ["render", str(content or ws.content)]
    argv += [str(s) for s in (styles if styles is not None else [ws.style])]
    argv += ["-o", str(output), "--size", "32", "--steps", "1", "--weights", weights]
    return Call(argv + list(extra), output)


# --- the corpus: each case builds its files in the workspace and returns the call -------------

CASES: list[tuple] = []


def case(expect: str, *marks):
    """Register a case; `expect` is a regex the error message must match (case-insensitive)."""

    def register(fn: Callable[[Workspace], Call]) -> Callable[[Workspace], Call]:
        CASES.append((fn, expect, marks))
        return fn

    return register


# input files


@case(r"content\.png: no such file")
def missing_content(ws):
    return run_args(ws, content=ws.file("missing") / "content.png")


@case(r"nope\.jpg: no such file")
def missing_style(ws):
    return run_args(ws, styles=[ws.file("nope.jpg")])


@case("is a directory, not an image")
def directory_as_content(ws):
    ws.file("adir.png").mkdir()
    return run_args(ws, content=ws.file("adir.png"))


@case("is a directory, not an image")
def directory_as_style(ws):
    return run_args(ws, styles=[ws.root / "in"])


@case(r"empty file \(0 bytes\)")
def zero_byte_file(ws):
    ws.file("empty.png").write_bytes(b"")
    return run_args(ws, content=ws.file("empty.png"))


@case("corrupt or truncated image")
def truncated_jpeg(ws):
    return run_args(ws, content=B.truncated(ws.file("cut.jpg"), B.rgb_jpeg, w=64, h=64))


@case("corrupt or truncated image")
def truncated_png(ws):
    return run_args(ws, styles=[B.truncated(ws.file("cut.png"), B.rgb_png, w=64, h=64)])


@case("not an image Pillow can read")
def text_file_named_png(ws):
    ws.file("notes.png").write_text("these are my notes, not an image\n" * 20)
    return run_args(ws, content=ws.file("notes.png"))


@case(r"1x1 is too small: each side must be at least 16 px")
def one_pixel_image(ws):
    Image.new("RGB", (1, 1), "red").save(ws.file("dot.png"))
    return run_args(ws, content=ws.file("dot.png"))


@case(r"8x8 is too small: each side must be at least 16 px")
def eight_pixel_image(ws):
    Image.new("RGB", (8, 8), "red").save(ws.file("tiny.png"))
    return run_args(ws, styles=[ws.file("tiny.png")])


@case(
    r"100000x100000 = 10,000,000,000 pixels exceeds the input limit.*decompression-bomb",
)
def decompression_bomb(ws):
    return run_args(ws, content=B.bomb_png(ws.file("bomb.png")))


# output path


@case(r"unsupported output extension '\.gif'")
def output_gif(ws):
    return run_args(ws, output=ws.out_dir / "result.gif")


@case(r"unsupported output extension '\.bmp'")
def output_bmp(ws):
    return run_args(ws, output=ws.out_dir / "result.bmp")


@case(r"unsupported output extension '\(none\)'")
def output_without_extension(ws):
    return run_args(ws, output=ws.out_dir / "result")


@case("output directory .* does not exist")
def output_directory_missing(ws):
    return run_args(ws, output=ws.root / "missing" / "result.png")


@case("is not a directory")
def output_parent_is_a_file(ws):
    (ws.root / "afile").write_text("x")
    return run_args(ws, output=ws.root / "afile" / "result.png")


@case("is a directory; give an output file name")
def output_is_a_directory(ws):
    ws.output.mkdir()
    return run_args(ws)


# outputs that are inputs: refused by resolved path or inode, the input untouched


def onto(ws: Workspace, flag: str, target: Path, *extra: str) -> Call:
    """A call whose `flag` (-o, --state-dir, --checkpoint-dir) names `target`, an input."""
    call = run_args(ws, *extra) if flag != "-o" else run_args(ws, *extra, output=target)
    if flag != "-o":
        call.argv += [flag, str(target)]
    return Call(call.argv, ws.output)


@case(r"the output .*content\.png is the content .*content\.png; writing it would destroy")
def output_is_the_content(ws):
    return onto(ws, "-o", ws.content)


@case(r"the output .* is the style 0 ")
def output_is_the_style_by_another_name(ws):
    return onto(ws, "-o", ws.root / "in" / ".." / "in" / "style.png")


@case(r"the output .*link\.png is the content")
def output_is_a_symlink_to_the_content(ws):
    ws.file("link.png").symlink_to(ws.content)
    return onto(ws, "-o", ws.file("link.png"))


@case(r"the output .*hard\.png is the style 0")
def output_is_a_hard_link_to_the_style(ws):
    ws.file("hard.png").hardlink_to(ws.style)
    return onto(ws, "-o", ws.file("hard.png"))


@case(r"the output .* is the --style-mask 0 ")
def output_is_a_style_mask(ws):
    mask = B.rgb_png(ws.file("mask.png"))
    return onto(ws, "-o", mask, "--style-mask", f"0:{mask}")


@case(r"the output .* is the --content-mask ")
def output_is_the_content_mask(ws):
    mask = B.rgb_png(ws.file("cmask.png"))
    return onto(ws, "-o", mask, "--content-mask", str(mask))


@case(r"the output .* is the --init ")
def output_is_the_init_image(ws):
    init = B.rgb_png(ws.file("init.png"))
    return onto(ws, "-o", init, "--init", str(init))


@case(r"--state-dir .* is the content")
def state_dir_is_the_content(ws):
    return onto(ws, "--state-dir", ws.content)


@case(r"--checkpoint-dir .* is the style 0")
def checkpoint_dir_is_the_style(ws):
    return onto(ws, "--checkpoint-dir", ws.style)


# options


@case("--size must be a positive long edge")
def size_zero(ws):
    return run_args(ws, "--size", "0")


@case("--size must be a positive long edge")
def size_negative(ws):
    return run_args(ws, "--size", "-5")


@case(r"--size must be a positive long edge up to \d+ px, got 10000000")
def size_huge(ws):
    return run_args(ws, "--size", "10000000")


@case("invalid value for '--size'")
def size_not_a_number(ws):
    return run_args(ws, "--size", "abc")


@case("smaller than the 16 px that conv5_1 needs")
def size_below_network_minimum(ws):
    return run_args(ws, "--size", "8")


@case(r"--style-size must be a positive long edge up to \d+ px, got 0")
def style_size_zero(ws):
    return run_args(ws, "--style-size", "0")


@case(r"--style-size must be a positive long edge up to \d+ px, got 10000000")
def style_size_huge(ws):
    return run_args(ws, "--style-size", "10000000")


@case("a resized style image would be 8×8 px.*raise --style-size")
def style_size_below_network_minimum(ws):
    return run_args(ws, "--style-size", "8")


@case("--steps must be ≥ 0")
def steps_negative(ws):
    return run_args(ws, "--steps", "-1")


@case("--steps must be a number")
def steps_not_a_number(ws):
    return run_args(ws, "--steps", "abc")


@case("--steps lists 2 values but there are 1 scales")
def steps_list_wrong_length(ws):
    return run_args(ws, "--steps", "1,2")


@case("no such option: --frobnicate")
def unknown_option(ws):
    return run_args(ws, "--frobnicate")


@case("missing argument")
def no_style_given(ws):
    return Call(["render", str(ws.content), "-o", str(ws.output), "--size", "32"], ws.output)


@case("unknown --optimizer 'sgd'")
def unknown_optimizer(ws):
    return run_args(ws, "--optimizer", "sgd")


@case("unknown --init 'zeros'")
def unknown_init(ws):
    return run_args(ws, "--init", "zeros")


@case("unknown --pooling 'min'")
def unknown_pooling(ws):
    return run_args(ws, "--pooling", "min")


@case("unknown --precision 'fp64'")
def unknown_precision(ws):
    return run_args(ws, "--precision", "fp64")


@case("--style-weight must be a finite number")
def style_weight_nan(ws):
    return run_args(ws, "--style-weight", "nan")


@case("--content-weight must be a finite number ≥ 0")
def content_weight_negative(ws):
    return run_args(ws, "--content-weight", "-1")


@case("--tv-weight must be a finite number")
def tv_weight_infinite(ws):
    return run_args(ws, "--tv-weight", "inf")


@case("--learning-rate .* must be greater than 0")
def learning_rate_zero(ws):
    return run_args(ws, "--learning-rate", "0")


@case("--style-blend has 3 weights for 1 styles")
def style_blend_wrong_count(ws):
    return run_args(ws, "--style-blend", "1,2,3")


@case("--style-blend must be comma-separated numbers")
def style_blend_not_numbers(ws):
    return run_args(ws, "--style-blend", "1,x", styles=[ws.style, ws.style])


@case("--style-blend weights must be ≥ 0 and not all 0")
def style_blend_all_zero(ws):
    return run_args(ws, "--style-blend", "0,0", styles=[ws.style, ws.style])


@case(r"--style-mask takes INDEX:PATH")
def style_mask_without_index(ws):
    return run_args(ws, "--style-mask", str(ws.content))


@case(r"--style-mask 2:.*there are 1 styles")
def style_mask_index_out_of_range(ws):
    return run_args(ws, "--style-mask", f"2:{ws.content}")


@case(r"mask\.png: no such file")
def style_mask_missing(ws):
    return run_args(ws, "--style-mask", f"0:{ws.file('mask.png')}")


@case("must have the content's aspect ratio")
def style_mask_wrong_aspect(ws):
    return run_args(ws, "--style-mask", f"0:{B.rgb_png(ws.file('tall.png'), 20, 40)}")


@case("corrupt or truncated image")
def content_mask_truncated(ws):
    mask = B.truncated(ws.file("cut.png"), B.rgb_png, w=64, h=64)
    return run_args(ws, "--content-mask", str(mask))


@case("--style-mask weights the Gram statistics")
def style_mask_with_mrf(ws):
    return run_args(ws, "--style-mask", f"0:{ws.content}", "--style-loss", "mrf")


@case("unknown --style-loss")
def unknown_style_loss(ws):
    return run_args(ws, "--style-loss", "patches")


@case(r"--mrf-patches must be ≥ 1")
def mrf_patches_zero(ws):
    return run_args(ws, "--style-loss", "mrf", "--mrf-patches", "0")


@case(r"--mrf-weight must be a finite number")
def mrf_weight_nan(ws):
    return run_args(ws, "--style-loss", "gram+mrf", "--mrf-weight", "nan")


@case(r"--tile must be ≥ 0")
def tile_negative(ws):
    return run_args(ws, "--tile", "-1")


@case("--overlap must be ≥ 0")
def overlap_negative(ws):
    return run_args(ws, "--overlap", "-3")


@case("--tile-batch must be ≥ 1")
def tile_batch_zero(ws):
    return run_args(ws, "--tile-batch", "0")


@case("--warmup must be ≥ 0 steps")
def warmup_negative(ws):
    return run_args(ws, "--warmup", "-1")


@case("--scales must be between 1 and 12")
def scales_zero(ws):
    return run_args(ws, "--scales", "0")


@case("--min-size")
def min_size_zero(ws):
    return run_args(ws, "--scales", "2", "--min-size", "0")


@case("--min-size")
def min_size_negative(ws):
    return run_args(ws, "--scales", "2", "--min-size", "-5")


@case("--seed")
def seed_negative(ws):
    return run_args(ws, "--seed", "-1")


@case("--seed")
def seed_too_large(ws):
    return run_args(ws, "--seed", str(2**64))


@case(r"--style-weight must be a finite number ≥ 0 \(at most 1e\+30\), got 1e\+308")
def style_weight_overflows_fp32(ws):
    return run_args(ws, "--style-weight", "1e308")


@case(r"--tv-weight must be a finite number ≥ 0 \(at most 1e\+30\), got 1e\+31")
def tv_weight_overflows_fp32(ws):
    return run_args(ws, "--tv-weight", "1e31")


@case(r"layer weight for conv4_2 is too large")
def layer_weight_overflows_fp32(ws):
    return run_args(ws, "--content-layers", "conv4_2:1e35")


@case(r"--content-layers needs layer names")
def content_layers_empty(ws):
    return run_args(ws, "--content-layers", "")


@case(r"--style-layers needs layer names")
def style_layers_empty(ws):
    return run_args(ws, "--style-layers", "")


@case(r"--style-blend must be comma-separated numbers")
def style_blend_empty(ws):
    return run_args(ws, "--style-blend", "")


@case(r"--checkpoint-every must be a number of seconds ≥ 0.*got nan")
def checkpoint_every_nan(ws):
    return run_args(ws, "--checkpoint-every", "nan")


@case(r"--checkpoint-every must be a number of seconds ≥ 0.*got inf")
def checkpoint_every_infinite(ws):
    return run_args(ws, "--checkpoint-every", "inf", "--checkpoint-dir", str(ws.out_dir / "ck"))


@case(r"--checkpoint-every must be a number of seconds ≥ 0.*got -1")
def checkpoint_every_negative(ws):
    return run_args(ws, "--checkpoint-every", "-1")


@case(r"--overlap 100000 is more than 4× the exact halo of these layers \(80 px")
def overlap_far_beyond_the_halo(ws):
    return run_args(ws, "--overlap", "100000")


@case(r"--state-dir .*afile/two\\nlines is inside a file")
def path_with_a_newline(ws):
    """The message quotes the path: it must stay one line (the newline is escaped)."""
    (ws.root / "afile").write_text("x")
    return run_args(ws, "--state-dir", str(ws.root / "afile" / "two\nlines"))


@case(r"not a regular file")
def content_is_a_fifo(ws):
    os.mkfifo(ws.file("pipe.png"))
    return run_args(ws, content=ws.file("pipe.png"))


@case(r"not a regular file")
def weights_file_is_a_fifo(ws):
    os.mkfifo(ws.file("pipe.pth"))
    return run_args(ws, weights=str(ws.file("pipe.pth")))


# the environment and the places a render writes besides its output


@case(r"HIRESNST_HOME '.*afile' is a file, not a directory")
def home_is_a_file(ws):
    (ws.root / "afile").write_text("x")
    call = run_args(ws)
    call.env["HIRESNST_HOME"] = str(ws.root / "afile")
    return call


@case(r"the cache directory \(HIRESNST_HOME\) .*afile/cache is inside a file")
def home_is_inside_a_file(ws):
    (ws.root / "afile").write_text("x")
    call = run_args(ws)
    call.env["HIRESNST_HOME"] = str(ws.root / "afile" / "cache")
    return call


@case(r"environment variable HIRESNST_NUM_PROCESSES must be a whole number, got 'two'")
def env_num_processes_not_a_number(ws):
    call = run_args(ws)
    call.env["HIRESNST_NUM_PROCESSES"] = "two"
    return call


@case(r"environment variable HIRESNST_PROCESS_ID must be a whole number, got '0.5'")
def env_process_id_not_a_number(ws):
    call = run_args(ws)
    call.env.update(HIRESNST_NUM_PROCESSES="2", HIRESNST_PROCESS_ID="0.5")
    return call


@case(r"HIRESNST_NUM_PROCESSES\) must be ≥ 1, got 0")
def env_num_processes_zero(ws):
    call = run_args(ws)
    call.env["HIRESNST_NUM_PROCESSES"] = "0"
    return call


@case(
    r"--platform gpu: this JAX has no GPU back end .*pip install 'hiresnst\[cuda\]'.*"
    r"--platform cpu$",
    pytest.mark.skipif(bool(sharding.gpu_plugins()), reason="a JAX GPU plugin is installed"),
)
def platform_gpu_without_a_gpu(ws):
    return run_args(ws, "--platform", "gpu")


@case(r"--state-dir .*afile is a file, not a directory")
def state_dir_is_a_file(ws):
    (ws.root / "afile").write_text("x")
    return run_args(ws, "--state-dir", str(ws.root / "afile"))


@case(r"--checkpoint-dir .* is inside a file")
def checkpoint_dir_inside_a_file(ws):
    (ws.root / "afile").write_text("x")
    return run_args(ws, "--checkpoint-dir", str(ws.root / "afile" / "ck"))


# output size, print and colour options


@case("--bit-depth must be 8 or 16")
def bit_depth_12(ws):
    return run_args(ws, "--bit-depth", "12")


@case("JPEG holds 8 bits per channel")
def jpeg_16_bit(ws):
    return run_args(ws, "--bit-depth", "16", output=ws.out_dir / "result.jpg")


@case("too large for JPEG")
def jpeg_too_wide(ws):
    return run_args(ws, "--width", "70000", "--height", "100", output=ws.out_dir / "r.jpg")


@case("--width and --height")
def width_without_height(ws):
    return run_args(ws, "--width", "64")


@case("--width must be a positive size")
def width_zero(ws):
    return run_args(ws, "--width", "0", "--height", "32")


@case("--print needs --dpi")
def print_without_dpi(ws):
    return run_args(ws, "--print", "60x40cm")


@case("print size 'banana'")
def print_unparseable(ws):
    return run_args(ws, "--print", "banana", "--dpi", "300")


@case(r"dpi must be a number in \(0, ")
def dpi_zero(ws):
    return run_args(ws, "--dpi", "0")


@case("unknown --fit 'stretch'")
def fit_unknown(ws):
    return run_args(ws, "--fit", "stretch")


@case("unknown --preserve-colors 'sepia'")
def preserve_colors_unknown(ws):
    return run_args(ws, "--preserve-colors", "sepia")


@case("--max-input-pixels must be")
def max_input_pixels_zero(ws):
    return run_args(ws, "--max-input-pixels", "0")


@case(r"exceeds the input limit of 100 pixels.*--max-input-pixels 1280")
def input_above_max_input_pixels(ws):
    return run_args(ws, "--max-input-pixels", "100")


# weights


@case("--weights '/nonexistent.pth': no such file or directory")
def weights_missing(ws):
    return run_args(ws, weights="/nonexistent.pth")


@case("unsupported weights file format")
def weights_random_bytes(ws):
    ws.file("junk.pth").write_bytes(np.random.default_rng(3).bytes(4096))
    return run_args(ws, weights=str(ws.file("junk.pth")))


@case("corrupt or truncated")
def weights_truncated(ws):
    data = B.NARROW_PTH.read_bytes()
    ws.file("cut.pth").write_bytes(data[: len(data) // 2])
    return run_args(ws, weights=str(ws.file("cut.pth")))


@case(r"weights file .* is empty \(0 bytes\)")
def weights_empty(ws):
    ws.file("empty.pth").write_bytes(b"")
    return run_args(ws, weights=str(ws.file("empty.pth")))


@case("not a VGG19 state dict.*VGG16")
def weights_of_vgg16(ws):
    return run_args(ws, weights=str(B.vgg16_safetensors(ws.file("vgg16.safetensors"))))


@case("contains NaN or infinite values")
def weights_with_nan(ws):
    return run_args(ws, weights=str(B.nan_vgg19_safetensors(ws.file("nan.safetensors"))))


@case(r"refused to load.*os\.system")
def weights_pickle_runs_code(ws):
    # The marker would appear in the workspace, which the test checks is unchanged.
    return run_args(ws, weights=str(B.evil_pth(ws.file("evil.pth"), ws.root / "pwned")))


@case(r"safetensors file \(header JSON is nested too deeply\)")
def weights_safetensors_deeply_nested_header(ws):
    header = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return run_args(ws, weights=str(B.safetensors_raw(ws.file("deep.safetensors"), header)))


@case(r"tensor 'a' has a bad shape \[4611686018427387904")
def weights_safetensors_absurd_shape(ws):
    header = {"a": {"dtype": "F32", "shape": [2**62, 2**62, 0], "data_offsets": [0, 0]}}
    return run_args(ws, weights=str(B.safetensors_raw(ws.file("huge.safetensors"), header)))


@case(r"tensor 'a' has a bad shape")
def weights_safetensors_hundred_dimensions(ws):
    header = {"a": {"dtype": "F32", "shape": [1] * 100, "data_offsets": [0, 4]}}
    path = B.safetensors_raw(ws.file("dims.safetensors"), header, b"\0" * 4)
    return run_args(ws, weights=str(path))


@case(r"overlap in the data buffer")
def weights_safetensors_overlapping_tensors(ws):
    return run_args(ws, weights=str(_overlapping_weights(ws.file("overlap.safetensors"))))


@case(r"corrupt or truncated PyTorch file \(its pickle expands to more than 200,000 objects")
def weights_pickle_expanding_exponentially(ws):
    return run_args(ws, weights=str(B.expanding_pth(ws.file("expand.pth"))))


@case("is a directory but not an orbax checkpoint")
def weights_plain_directory(ws):
    return run_args(ws, weights=str(ws.root / "in"))


@case(r"no VGG19 weights cached in .*hiresnst weights fetch.*--weights random")
def weights_auto_without_cache(ws):
    return run_args(ws, weights="auto")


def _overlapping_weights(path: Path) -> Path:
    """The narrow VGG19 with every tensor's data offsets pointing at one byte range."""
    import json
    import struct

    data = B.FIXTURES.joinpath("vgg19_narrow.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    biggest = max(e["data_offsets"][1] - e["data_offsets"][0] for e in header.values())
    for e in header.values():
        e["data_offsets"] = [0, e["data_offsets"][1] - e["data_offsets"][0]]
    return B.safetensors_raw(path, header, b"\0" * biggest)


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")}


def _params() -> list:
    params = []
    for fn, expect, marks in CASES:
        for quiet in (False, True):
            params.append(
                pytest.param(
                    fn,
                    expect,
                    quiet,
                    id=f"{fn.__name__}-{'quiet' if quiet else 'default'}",
                    marks=marks,
                )
            )
    return params


@pytest.mark.parametrize(("build", "expect", "quiet"), _params())
def test_bad_input_gives_one_error_line(tmp_path, capsys, monkeypatch, build, expect, quiet):
    ws = Workspace(tmp_path)
    call = build(ws)
    for name, value in call.env.items():
        monkeypatch.setenv(name, value)
    before = _tree(tmp_path)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        code = main([*call.argv, "-q"] if quiet else call.argv)
    out, err = capsys.readouterr()
    # Warnings that Python shows by default would be extra stderr lines in a real run.
    shown = [
        str(w.message)
        for w in caught
        if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))
    ]
    assert "Traceback" not in out + err
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and lines[0] != "error: ", err
    assert not shown, shown
    assert re.search(expect, lines[0], re.IGNORECASE), lines[0]
    assert out == ""
    assert not call.output.is_file()
    assert _tree(tmp_path) == before  # no output, no temp file, no marker of executed code


def test_case_count():
    assert len(CASES) >= 25
    assert len({fn.__name__ for fn, *_ in CASES}) == len(CASES)


def test_evil_payload_is_live(tmp_path):
    """The pickle in `weights_pickle_runs_code` really runs its command when unpickled."""
    marker = tmp_path / "pwned"
    pickle.loads(B.reduce_pickle("os", "system", f"touch {marker}"))
    assert marker.exists()


# --- unusual but valid images: they must render ------------------------------------------------

UNUSUAL = [
    pytest.param(B.grey_png, "grey.png", "L", id="greyscale-png"),
    pytest.param(B.rgba_png, "rgba.png", "RGBA", id="rgba-png"),
    pytest.param(B.grey16_png, "grey16.png", "I;16", id="grey16-png"),
    pytest.param(B.palette_png_transparent, "palette.png", "P", id="palette-png-transparency"),
    pytest.param(B.la_png, "la.png", "LA", id="la-png"),
    pytest.param(B.cmyk_jpeg, "cmyk.jpg", "CMYK", id="cmyk-jpeg"),
    pytest.param(B.exif_rotated_jpeg, "rotated.jpg", "RGB", id="exif-rotated-jpeg"),
]


@pytest.mark.parametrize(("make", "name", "mode"), UNUSUAL)
def test_unusual_inputs_are_what_they_claim(tmp_path, make, name, mode):
    with Image.open(make(tmp_path / name)) as img:
        assert img.mode == mode
        assert img.size == (40, 32)
        if mode == "P":
            assert img.info.get("transparency") == 0
        if "rotated" in name:
            assert img.getexif().get(0x0112) == 6


@pytest.mark.parametrize(("make", "name", "mode"), UNUSUAL)
def test_unusual_valid_input_renders(tmp_path, capsys, make, name, mode):
    """Used as content and as style; all are 40×32 so one compiled step serves them all (the
    EXIF-rotated one is 32×40 upright and must come out portrait)."""
    path = make(tmp_path / name)
    out = tmp_path / "out.png"
    code = main(["render", str(path), str(path), "-o", str(out), *FAST])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err
    with Image.open(out) as img:
        size = img.size
    assert size == ((26, 32) if "rotated" in name else (32, 26))
    assert imageio.read_metadata(out)["weights"]["kind"] == "random"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "out.png"])


def test_series_refuses_an_output_that_is_an_input(tmp_path, capsys):
    """A series writes its contact sheet (and each job's output) into OUT: an input there with
    that name would be destroyed."""
    from hiresnst import series

    out = tmp_path / "out"
    out.mkdir()
    content = B.rgb_png(out / series.CONTACT_SHEET_NAME)
    B.rgb_png(tmp_path / "s.png")
    spec = tmp_path / "spec.toml"
    spec.write_text(
        f'[defaults]\ncontent = "{content}"\nstyle = "s.png"\nsize = 32\nsteps = 1\n'
        'weights = "random"\n'
    )
    data = content.read_bytes()
    assert main(["series", str(spec), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "the contact sheet" in err and "is the input of job" in err
    assert content.read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == [content.name]


def _strict(token: str):
    raise ValueError(f"not JSON: {token}")


def test_json_is_strict_when_the_render_diverges(tmp_path, capsys):
    """Weights and step size at 1e30 overflow the loss to NaN: --json must still print JSON that a
    strict parser reads (null, not the NaN token), and the output's metadata likewise."""
    import json

    ws = Workspace(tmp_path)
    big = ("--learning-rate", "1e30", "--style-weight", "1e30", "--content-weight", "1e30")
    call = run_args(ws, *big, "--steps", "3", "--json", "-q", weights=str(B.NARROW_PTH))
    assert main(call.argv) == 0
    info = json.loads(capsys.readouterr().out, parse_constant=_strict)
    assert info["levels"][0]["loss_last"] is None
    json.loads(json.dumps(imageio.read_metadata(call.output)), parse_constant=_strict)
    assert imageio.read_metadata(call.output)["levels"][0]["loss_last"] is None


def test_series_spec_that_is_a_fifo_is_refused_not_read(tmp_path, capsys):
    import signal

    spec = tmp_path / "spec.toml"
    os.mkfifo(spec)

    def hung(*_):
        raise AssertionError("reading the FIFO blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        code = main(["series", str(spec), "-o", str(tmp_path / "out")])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "not a regular file" in err, err


def test_weights_import_refuses_overlapping_tensors_and_caches_nothing(tmp_path, capsys):
    path = _overlapping_weights(tmp_path / "overlap.safetensors")
    assert main(["weights", "import", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "overlap in the data buffer" in err, err
    main(["weights", "info"])
    assert "no VGG19 weights cached" in capsys.readouterr().out
