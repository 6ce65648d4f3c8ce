"""`mrlkit serve`: the HTTP service (docs/serve.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InvalidInputError
from ._common import BackendOpt, StoreOpt, app, err

@app.command("serve")
def serve(
    store: StoreOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on. Without API keys only "
                                      "127.0.0.1 is allowed.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    model: Annotated[Optional[list[str]], typer.Option(
        "--model", help="A model to serve and load at start (repeat for more; default "
        "all-MiniLM-L6-v2).")] = None,
    api_key_file: Annotated[Optional[Path], typer.Option(
        help="API keys, one per line: KEY [read|write]. Also MRLKIT_API_KEYS.")] = None,
    allow_non_mrl: Annotated[bool, typer.Option(
        "--allow-non-mrl", help="Accept `dimensions` for models not Matryoshka-trained.")
    ] = False,
    backend: BackendOpt = "torch",
    max_body: Annotated[int, typer.Option(help="Largest request body, bytes.")] = 2 << 20,
    max_inputs: Annotated[int, typer.Option(help="Texts per embeddings request.")] = 2048,
    max_chars: Annotated[int, typer.Option(help="Characters per text.")] = 32_768,
    max_k: Annotated[int, typer.Option(help="Hits per query.")] = 1_000,
    max_in_flight: Annotated[int, typer.Option(
        help="Requests served at once per API key (or, without keys, in all); more get "
        "429 with Retry-After.")] = 64,
    header_timeout: Annotated[float, typer.Option(
        help="Seconds a connection has to send a request's headers; then it is closed.")
    ] = 10.0,
    body_timeout: Annotated[float, typer.Option(
        help="Seconds a request has to send its body; then 408.")] = 30.0,
    max_batch: Annotated[int, typer.Option(help="Texts per model call.")] = 64,
    max_wait_ms: Annotated[float, typer.Option(
        help="How long a model call waits for other requests' texts.")] = 5.0,
    search_threads: Annotated[Optional[int], typer.Option(
        min=1, max=256, help="Threads searches run on, in parallel (default: one per "
        "core); the model has a thread of its own.")] = None,
) -> None:
    """Serve OpenAI-compatible /v1/embeddings, embedding sets and their search over HTTP
    (OpenAPI at /docs; /health, /ready, /metrics)."""
    try:
        import uvicorn

        from ..server import Limits, ServerConfig, create_app, load_keys
        from ..server.protocol import protocol_class
    except ImportError:
        raise InvalidInputError("mrlkit serve needs the server extra: "
                                "pip install 'mrlkit[server]'") from None
    from ..registry import get_spec

    keys = load_keys(api_key_file)
    models = [get_spec(m).name for m in (model or ["all-MiniLM-L6-v2"])]
    config = ServerConfig(store=store, models=models, keys=keys, host=host,
                          allow_non_mrl=allow_non_mrl, backend=backend,
                          search_threads=search_threads,
                          limits=Limits(body_bytes=max_body, inputs=max_inputs,
                                        chars=max_chars, k=max_k, in_flight=max_in_flight,
                                        max_batch=max_batch, max_wait_ms=max_wait_ms,
                                        header_seconds=header_timeout,
                                        body_seconds=body_timeout))
    from ..providers import get_provider

    for name in models:  # a model that cannot load is one error line before the server
        spec = get_spec(name)
        local = spec.provider == "sentence-transformers"
        get_provider(spec, quiet=True, **({"backend": backend} if local else {})
                     ).embed(["warm-up"])
    err.print(f"mrlkit serve on http://{host}:{port} — models {', '.join(models)}; "
              + (f"{len(keys)} API key(s)" if keys else
                 "no API key: loopback only, and anyone on this machine may use it") +
              "; /health, /ready and /metrics need no key; docs at /docs",
              markup=False, highlight=False)
    uvicorn.run(create_app(config), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=30, http=protocol_class(header_timeout),
                timeout_keep_alive=5)
