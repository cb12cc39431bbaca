"""A drop folder of daily sales exports (CSV, some gzipped, some with ';' and a BOM) into PostgreSQL.

    elt --project examples/csv_drop run

Each file loads once (a manifest in pipeline.state); drop a new file in
``drop/`` and run again to load just that one. A file that cannot be read goes
to ``pipeline.dead_letter`` with its name, line and reason, and the run ends
``partial`` (exit 3) while the other files load: try it with an empty file.
"""

from pathlib import Path

from elt import FileExtractor, Pipeline


class Sales(FileExtractor):
    name = "sales"
    folder = Path(__file__).parent / "drop"
    pattern = "sales-*.csv*"
    # The tills export with ',' or ';': each file's delimiter is detected on its own. The header is
    # still fixed by the first file, so a file with other columns is rejected, not loaded half-right.
    sniff_each_file = True
    # Set move_processed = True in production: loaded files then go to drop/processed/.


Pipeline("shopfront", streams=[Sales()], description="Daily sales exports from the till system")
