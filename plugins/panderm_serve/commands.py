"""``panderm serve``: run the decision-support page and JSON API with uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from panderm_cli import options

_CTX = {"help_option_names": ["-h", "--help"]}
SERVE_MAX_PIXELS = 16_000_000  # panderm.serve.uploads.SERVE_MAX_PIXELS (not imported: keeps --help light)

EPILOG = """\b
Examples:
  panderm serve --demo
  panderm serve --run clf/ --port 8765
  panderm serve --run clf/ --host 0.0.0.0 --token "$SECRET"
  curl -F image=@lesion.jpg http://127.0.0.1:8765/api/v1/predict
  curl -H "Authorization: Bearer $SECRET" -F image=@lesion.jpg http://HOST:8765/api/v1/predict

\b
Page at http://HOST:PORT/ ; API: POST /api/v1/predict (multipart field
'image'), GET /api/v1/health, GET /api/v1/model; schema at /openapi.json.
Safe defaults: loopback only (a non-loopback --host needs --token); answers
only loopback Host names (and the --host name) and refuses foreign Origin
headers (403); uploads up to --max-upload-mb and --max-pixels (16 MP; large
JPEGs are decoded reduced), short side at least 32 px, decoded a few at a
time, kept in memory only (never written to disk unless --keep-uploads DIR:
0600 files in a 0700 folder); --no-reference-images hides the similar cases'
pictures (other patients' images); JSON errors without stack traces; a request
log without image content. Research use only — not a diagnosis."""


@click.command("serve", epilog=EPILOG, context_settings=_CTX)
@options.run(required=False, help="Classifier bundle folder (from `panderm classifier build`); or --demo.")
@click.option("--demo", is_flag=True, help="Serve the bundled demo classifier.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; anything but loopback requires --token.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port to listen on (0: any free port).")
@click.option("--token", envvar="PANDERM_SERVE_TOKEN", default=None,
              help="Access token for /api/* (Bearer or X-Panderm-Token header). Env: PANDERM_SERVE_TOKEN.")
@click.option("--max-upload-mb", default=10.0, show_default=True, type=click.FloatRange(0.01, 1024),
              help="Largest accepted image file.")
@click.option("--max-pixels", default=SERVE_MAX_PIXELS, show_default=True, type=click.IntRange(1024, 500_000_000),
              help="Largest image decoded (width × height; a JPEG counts at its reduced draft size).")
@click.option("--keep-uploads", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Keep a copy of each accepted upload here (random names, 0600 files, folder made 0700). "
                   "Default: keep nothing.")
@click.option("--no-reference-images", is_flag=True,
              help="Similar cases without thumbnails or image names (they are other patients' pictures).")
@click.option("--no-microbatch", is_flag=True, help="One model call per request (no micro-batching).")
@click.option("--batch-window-ms", default=5.0, show_default=True, type=click.FloatRange(0, 1000),
              help="How long to gather concurrent requests into one model call.")
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(1, 1024),
              help="Most images in one micro-batched model call.")
@click.option("--neighbours", default=5, show_default=True, type=click.IntRange(0, 20),
              help="Similar cases returned per prediction (0: none).")
@options.device()
@options.precision(help="Inference precision: auto = bf16 on CUDA and on CPUs with AMX/AVX512-BF16, else fp32; "
                        "fp16 needs CUDA.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False),
              help="Server log level (the request log never holds image content).")
def serve_cmd(run_dir, demo, host, port, token, max_upload_mb, max_pixels, keep_uploads, no_reference_images,
              no_microbatch, batch_window_ms, max_batch, neighbours, device, precision, log_level):
    """Local web page + HTTP API for a skin-lesion classifier (research use only)."""
    from panderm.serve.server import check_exposure

    check_exposure(host, token)  # before any slow loading
    if bool(run_dir) == bool(demo):
        raise click.UsageError("pass exactly one of --run DIR (a classifier bundle) or --demo")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from panderm.classifier import load_classifier
    from panderm.serve.app import create_app
    from panderm.serve.server import run

    clf = load_classifier(None if demo else run_dir, device=device, precision=precision)
    app = create_app(clf, token=token, max_upload_mb=max_upload_mb, max_pixels=max_pixels, keep_uploads=keep_uploads,
                     batch_window_ms=batch_window_ms, max_batch=max_batch, microbatch=not no_microbatch,
                     neighbours=neighbours, host=host, reference_images=not no_reference_images)
    shown = "[" + host + "]" if ":" in host else host
    click.echo(f"PanDerm serve: http://{shown}:{port}/  (research use only — not a diagnosis)", err=True)
    if token is None:
        click.echo("No token: API open to this machine only.", err=True)
    for note in (clf.ood_notice, clf.ood_precision_note):
        if note:
            click.echo(f"Note: {note}.", err=True)
    run(app, host=host, port=port, log_level=log_level)
