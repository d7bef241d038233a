"""`lstm export`: a trained run as an ONNX or TorchScript file for serving without lstmcli."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from lstmcli.cli.common import (
    JsonOpt,
    ModelDirOpt,
    app,
    choice_option,
    handles_errors,
    out,
    print_json,
)
from lstmcli.config import EXPORT_FORMATS
from lstmcli.errors import ConfigError


@app.command("export")
@handles_errors
def export_command(
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="The file to write (model.onnx, model.pt); tokenizer.json and "
        "FILE.json are written beside it. Required.", show_default=False)] = None,
    model: ModelDirOpt = None,
    fmt: Annotated[str | None, choice_option(
        "--format", choices=lambda: EXPORT_FORMATS, help="\\[default: from the file's suffix: "
        ".onnx is onnx; .pt and .ts are torchscript]", show_default=False)] = None,
    int8: Annotated[bool, typer.Option(
        "--int8", help="Int8 weight matrices (dynamic quantization): a smaller file, "
        "probabilities a little off; faster for some models and CPUs (see the README).")]
    = False,
    opset: Annotated[int | None, typer.Option(
        "--opset", help="ONNX opset, 11 to 20. \\[default: 17]", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing FILE (and its FILE.json, tokenizer.json).")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a trained run as one ONNX or TorchScript file (ids, lengths -> logits), verified
    against the run before it is written."""
    from lstmcli.inference.export import export_run, plan, require_onnx, sidecar_path
    from lstmcli.runload import load_run

    if output is None:  # checked here: click's own message would be a multi-line box
        raise ConfigError("pass --output FILE, for example --output model.onnx (ONNX) or "
                          "--output model.pt (TorchScript)")
    fmt, opset = plan(output, fmt, opset, overwrite)  # bad flags fail before the model loads
    if fmt == "onnx":
        require_onnx()
    sidecar = export_run(load_run(model, "cpu"), output, fmt, int8, opset, overwrite)
    if as_json:
        print_json({"output": str(output), "sidecar": str(sidecar_path(output)), **sidecar})
        return
    verified = sidecar["verified"]
    kind = f"{fmt}{' int8' if int8 else ''}"
    out.print(f"wrote {escape(str(output))} ({kind}, {sidecar['cell']}), "
              f"{escape(str(output.parent / sidecar['tokenizer']))} and "
              f"{escape(str(sidecar_path(output)))}")
    out.print(f"verified on {verified['rows']} rows against the run: max |logit difference| "
              f"{verified['max_abs_logit_difference']:.1e}, same label "
              f"{verified['argmax_agreement']:.0%}")
