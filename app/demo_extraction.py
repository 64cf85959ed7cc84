"""The built-in task a real model visibly learns: pull three fields out of a sentence as JSON.

SmolLM2-135M-Instruct, asked as it is, answers in its own shape (pretty-printed
JSON, a capitalised job, "Meet Ingrid Kaya" as the name), so its held-out
exact match is about 0 %; a few dozen LoRA steps on this CPU teach it the one
fixed shape, `{"name": …, "city": …, "job": …}`, and exact match passes 80 %.
The answer is checkable character by character, which is what exact match
needs, and copying spans from the input is something a small model can do.

Rows are built by arithmetic over fixed lists, never `random`: the file is
byte-identical on every machine (its content hash is its identity). Every
row is distinct, so the held-out rows are sentences training never saw.
Pure Python, so the web app imports it without torch.
"""
from __future__ import annotations

import json
from pathlib import Path

from app.demo_dataset import write_rows

EXTRACTION_DATASET_ID = "demo-extract"
EXTRACTION_DATASET_NAME = "Demo: extract name, city and job as JSON (for SmolLM2)"
EXTRACTION_DATASET_ROWS = 300
INSTRUCTION = "Extract the person's name, city and job as JSON."
# What the new-job form suggests for this dataset, so that exact match shows from the first job.
SUGGESTED_EVAL_COUNT = 20
SUGGESTED_EVAL_EVERY = 25
SUGGESTED_SAMPLE_EVERY = 25

FIRST_NAMES = ("Maria", "John", "Aiko", "Lars", "Fatima", "Pedro", "Chen", "Olga", "Kwame", "Sofia",
               "Ravi", "Emma", "Yusuf", "Ingrid", "Tomas", "Leila", "Hugo", "Mei", "Diego", "Anya")
LAST_NAMES = ("Lopez", "Smith", "Tanaka", "Berg", "Haddad", "Silva", "Wang", "Ivanova", "Mensah", "Rossi",
              "Patel", "Brown", "Kaya", "Dahl", "Novak", "Karimi", "Martin", "Lin", "Ortiz", "Petrova")
CITIES = ("Porto", "Denver", "Osaka", "Bergen", "Tunis", "Recife", "Xi'an", "Kazan", "Accra", "Turin",
          "Pune", "Leeds", "Izmir", "Malmo", "Brno", "Shiraz", "Lyon", "Taipei", "Cusco", "Riga")
JOBS = ("nurse", "pilot", "baker", "teacher", "chemist", "welder", "lawyer", "farmer", "painter", "dentist",
        "plumber", "editor", "chef", "architect", "librarian", "mechanic", "florist", "surgeon", "tailor", "miner")
SENTENCES = (
    "{name} lives in {city} and works as a {job}.",
    "A {job} from {city}, {name} joined the team last week.",
    "In {city}, {name} has been a {job} for ten years.",
    "{name}, a {job}, moved to {city} in spring.",
    "Meet {name}: {job} by day, living in {city}.",
)


def extraction_rows(count: int = EXTRACTION_DATASET_ROWS) -> list[dict[str, str]]:
    """Mixed strides (each field its own function of i and i // 20) keep all rows distinct."""
    rows: list[dict[str, str]] = []
    for i in range(count):
        name = f"{FIRST_NAMES[i % 20]} {LAST_NAMES[(3 * i + i // 20) % 20]}"
        city = CITIES[(7 * i + 3 * (i // 20)) % 20]
        job = JOBS[(11 * i + 7 * (i // 20) + 5) % 20]
        sentence = SENTENCES[(i + i // 20) % len(SENTENCES)].format(name=name, city=city, job=job)
        answer = json.dumps({"name": name, "city": city, "job": job}, ensure_ascii=False)
        rows.append({"instruction": INSTRUCTION, "input": sentence, "output": answer})
    return rows


def write_extraction_dataset(path: Path) -> int:
    return write_rows(path, extraction_rows())


# The same task as preference pairs, for the DPO objective: the compact JSON answer is preferred to
# a prose answer with the same facts (what an instruct model tends to say when asked as it is).
PREFERENCE_DATASET_ID = "demo-prefer"
PREFERENCE_DATASET_NAME = "Demo: prefer the compact JSON answer to prose (preference pairs, for DPO on SmolLM2)"
PROSE = ("{name} is a {job} who lives in {city}.", "{name} works as a {job} in {city}.",
         "The person is {name}, a {job} based in {city}.")


def preference_rows(count: int = EXTRACTION_DATASET_ROWS) -> list[dict[str, object]]:
    """Each extraction row as a pair: chosen the JSON answer, rejected the same facts in a sentence."""
    rows: list[dict[str, object]] = []
    for i, row in enumerate(extraction_rows(count)):
        facts = json.loads(row["output"])
        prose = PROSE[i % len(PROSE)].format(**facts)
        rows.append({"prompt": f"{row['instruction']}\n\n{row['input']}", "chosen": row["output"], "rejected": prose})
    return rows


def write_preference_dataset(path: Path) -> int:
    return write_rows(path, preference_rows())
