"""`make demo`: the pipeline end to end on the embedded default (SQLite, bundled sample traces).

Today: migrate the store, ingest the bundled Azure 2023 samples (CC-BY 4.0, Patel et al., ISCA 2024)
and print the per-class window loads. Each later stage adds its step here.
"""

from __future__ import annotations

import os
from pathlib import Path

from dynamo_pipeline.config import load_settings
from dynamo_pipeline.ingest import ingest_paths, window_loads
from dynamo_pipeline.ingest.summary import format_summary, format_windows
from dynamo_pipeline.store import open_store, upgrade

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "azure_llm_2023"


def main() -> None:
    os.environ.setdefault("DYNAMO_HOME", "var")
    settings = load_settings()
    print(f"store: {settings.database_url}")
    upgrade(settings.database_url)
    store = open_store(settings.database_url)
    print("\n== 1. ingest the bundled Azure LLM inference traces (2023)")
    print(format_summary(ingest_paths(store, [SAMPLES], settings)))
    print("\n== 2. per-class window loads")
    print(format_windows(window_loads(store, settings.window_s), settings.classes.names()))


if __name__ == "__main__":
    main()
