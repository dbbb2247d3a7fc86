"""How fast the controller writes and reads the record of a round with N participants.

A round is recorded once, when it ends, with every participant's outcome; the REST API
reads rounds a page at a time, each page stopping before 10,000 outcomes. For each state
store (SQLite in a file, and PostgreSQL when ``--postgres URL`` is given), this writes
``--rounds`` rounds of ``--clients`` outcomes (`StateStore.finish_round`, one transaction
each) and reads them back page by page (`StateStore.rounds_page`), and prints the median
time per round written, per page read, and the size of a round's record.

    python benchmarks/round_records.py --clients 10000 --rounds 5 \
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres --json records.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from stratafl.records import ClientOutcome, RoundRecord
from stratafl.status import OutcomeStatus, RoundStatus
from stratafl.store.state import StateStore


def round_record(session_id: str, number: int, clients: int) -> RoundRecord:
    """A finished round of ``clients`` participants, each with the metrics a client sends."""
    ids = [f"device-{i:06d}" for i in range(clients)]
    outcomes = [
        ClientOutcome(
            client_id=client,
            combiner_id="combiner-0",
            status=OutcomeStatus.OK,
            num_examples=600,
            metrics={"train_loss": 0.41, "train_accuracy": 0.87},
            bytes_up=70_000,
            bytes_down=70_000,
            seconds=1.25,
        )
        for client in ids
    ]
    return RoundRecord(
        session_id=session_id,
        number=number,
        status=RoundStatus.FINISHED,
        model_in=f"m{number - 1}",
        model_out=f"m{number}",
        started_at=time.time(),
        duration=10.0,
        participants=ids,
        outcomes=outcomes,
    )


def measure(url: str, clients: int, rounds: int) -> dict[str, object]:
    store = StateStore(url).open()
    try:
        session_id = f"bench-{uuid.uuid4().hex[:8]}"
        store.create_session(session_id, {"rounds": rounds}, "m0")
        records = [round_record(session_id, n, clients) for n in range(1, rounds + 1)]
        writes = []
        for record in records:
            started = time.perf_counter()
            store.finish_round(record, final_model_id=None)
            writes.append(time.perf_counter() - started)
        reads, pages, after = [], 0, None
        while True:
            started = time.perf_counter()
            page = store.rounds_page(session_id, after)
            reads.append(time.perf_counter() - started)
            pages += 1
            if page.next is None:
                break
            after = page.next
        return {
            "clients": clients,
            "rounds": rounds,
            "write_seconds_median": statistics.median(writes),
            "read_page_seconds_median": statistics.median(reads),
            "pages": pages,
            "record_bytes": len(records[0].model_dump_json()),
        }
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", help="a SQLAlchemy URL of a PostgreSQL database to use")
    parser.add_argument("--json", type=Path, default=Path("round_records.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        stores = {"sqlite": f"sqlite:///{Path(folder) / 'state.db'}"}
        if args.postgres:
            stores["postgresql"] = args.postgres
        for name, url in stores.items():
            rows.append({"store": name, **measure(url, args.clients, args.rounds)})
    header = ("store", "clients", "write/round", "read/page", "pages", "MB/round")
    print("{:<11} {:>8} {:>12} {:>10} {:>6} {:>9}".format(*header))
    for row in rows:
        print(
            f"{row['store']:<11} {row['clients']:>8} {row['write_seconds_median']:>11.3f}s "
            f"{row['read_page_seconds_median']:>9.3f}s {row['pages']:>6} "
            f"{row['record_bytes'] / 1e6:>9.2f}"
        )
    args.json.write_text(json.dumps(rows, indent=2))
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
