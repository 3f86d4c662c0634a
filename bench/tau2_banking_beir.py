"""Build the τ²-bench banking_knowledge retrieval set in BEIR layout, into a folder of your choice.

    python bench/tau2_banking_beir.py OUT [--source ../shared/datasets/tau2-banking-knowledge] [--full-instructions]

As the dataset's README says:
- corpus.jsonl: one row per document (`_id` = id, `title`, `text` = content);
- queries.jsonl: the paragraph after `**Your situation:**` in a task's instructions, up to the
  next `**…:**` heading (66 of the 97 tasks have one): only what the customer knows. The cut is
  also made at a Markdown heading line (`## How to Behave`), which is a heading as well and
  otherwise leaks the simulator's behaviour notes into a few queries;
- qrels/test.tsv: each of the task's `required_documents` is relevant (score 1).
`--full-instructions` uses the whole instructions of all 97 tasks instead (an upper bound only: they
hint at what the agent should do). The dataset's LICENSE (MIT) is copied beside the output; the
dataset itself is not committed to this repository.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "tau2-banking-knowledge"
_NEXT_HEADING = re.compile(r"\*\*[^*\n]+:\*\*|^#{1,6}\s", re.MULTILINE)


def situation(instructions: str) -> str | None:
    """The text after `**Your situation:**` up to the next bold `**…:**` or Markdown heading, or None."""
    marker = "**Your situation:**"
    if marker not in instructions:
        return None
    rest = instructions.split(marker, 1)[1]
    cut = _NEXT_HEADING.search(rest)
    text = rest[: cut.start()] if cut else rest
    return " ".join(text.split()) or None


def build(source: Path, out: Path, full_instructions: bool = False) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    docs = sorted((source / "documents").glob("*.json"))
    with (out / "corpus.jsonl").open("w") as f:
        for path in docs:
            doc = json.loads(path.read_text())
            f.write(json.dumps({"_id": doc["id"], "title": doc["title"], "text": doc["content"]}) + "\n")
    tasks = json.loads((source / "tasks.json").read_text())
    queries = 0
    with (out / "queries.jsonl").open("w") as fq, (out / "qrels" / "test.tsv").open("w") as fr:
        fr.write("query-id\tcorpus-id\tscore\n")
        for task in tasks:
            instructions = task["user_scenario"]["instructions"]
            text = " ".join(instructions.split()) if full_instructions else situation(instructions)
            if not text or not task.get("required_documents"):
                continue
            fq.write(json.dumps({"_id": task["id"], "text": text}) + "\n")
            for doc_id in task["required_documents"]:
                fr.write(f"{task['id']}\t{doc_id}\t1\n")
            queries += 1
    shutil.copy2(source / "LICENSE", out / "LICENSE")
    (out / "SOURCE.md").write_text(
        "Built by bench/tau2_banking_beir.py from sierra-research/tau2-bench (commit a2c0247),\n"
        "data/tau2/domains/banking_knowledge; MIT licence (LICENSE beside this file).\n"
        f"queries: {'full instructions' if full_instructions else 'the **Your situation:** paragraph'}\n"
    )
    return {"documents": len(docs), "queries": queries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write corpus.jsonl, queries.jsonl, qrels/test.tsv into")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the dataset folder")
    parser.add_argument("--full-instructions", action="store_true", help="whole instructions (upper bound)")
    args = parser.parse_args()
    print(json.dumps(build(args.source, args.out, args.full_instructions)))


if __name__ == "__main__":
    main()
