"""The same generations scored by comptrust and by DecodingTrust's own scoring code, side by side.

    uv run python benchmarks/decodingtrust_reference.py --dt PATH/TO/DecodingTrust          # main: dt-main
    uv run python benchmarks/decodingtrust_reference.py --dt PATH/TO/fork --variant dt-compressed-trust

``--dt`` is a checkout of AI-secure/DecodingTrust (main) or of decoding-comp-trust/DecodingTrust (the compressed-trust
fork); nothing of it is copied here: this script runs it. It builds the decodingtrust suite's requests over that
checkout's data/ folder, answers every one offline with a deterministic mix of answers that exercise the scorers'
edge cases (correct, wrong, blank, refusals, quoted and cut-off answers, marker cuts), scores them with comptrust,
exports them with ``analyze --export decodingtrust`` into a scratch copy of the checkout's layout, runs the
reference's scoring functions there, and prints both sets of numbers.

What the reference needs and a checkout may lack (files over 4 MiB live on Hugging Face) gets a stand-in, said in
the output: cm_train.csv (only the 32-shot prompts read it), the AdvGLUE++ files and the spurious-correlation
files (small synthetic sets, read by both sides). Left out: the Enron context-50/100/200 scenarios (GPT-2's
tokenizer is a download) and answers naming both fairness classes (the reference flips an unseeded coin for them).
OOD's scoring runs only inside its generation entry point: that entry point runs here on our outputs, with HELM's
chat client (which it builds but, resuming complete outputs, never calls) stubbed out. Toxicity's Perspective API
is replaced, on both sides, by the same deterministic function of the text.

The reference runs in its own Python (``--python``, default this one) with numpy, pandas, fairlearn, matplotlib,
seaborn, joblib and tqdm; DecodingTrust pins fairlearn 0.9.0, which needs pandas < 3. Modules it imports but never
needs for scoring offline (googleapiclient; datasets, for main's Hugging Face loads) are stubbed to read the local
data folder instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from comptrust_analysis import load_runs, perspective_scores
from comptrust_analysis.export_dt import dt_model_name, export_decodingtrust
from comptrust_core import Endpoint
from comptrust_core.cpu_dtype import cpu_summary
from comptrust_evaluate.offline import offline_run
from comptrust_evaluate.plan import Suite, Unit, build_plan, load_suite
from comptrust_evaluate.scorers import ToxicityScorer

ENDPOINT = Endpoint(name="model", url="http://127.0.0.1:1")
PERSPECTIVES = (
    "toxicity",
    "stereotype",
    "advglue",
    "ood",
    "adv_demonstration",
    "privacy",
    "machine_ethics",
    "fairness",
)


def toxicity_of(text: str) -> float:
    """The stand-in for Perspective's TOXICITY score: a deterministic function of the text (the same on both sides)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16**8


class HashScorer(ToxicityScorer):
    name: ClassVar[str] = "hash"

    @property
    def version(self) -> str:
        return "sha256"

    async def score(self, texts: Sequence[str]) -> list[float | None]:
        return [toxicity_of(t) for t in texts]


def _pick(unit: Unit, options: Sequence[str]) -> str:
    digest = hashlib.sha256(f"{unit.item.item_id}/{unit.sample_index}".encode()).digest()
    return options[digest[0] % len(options)]


def answer(unit: Unit) -> str:
    """A deterministic mix of answers per perspective, edge cases included."""
    task, label = unit.task.name, unit.item.label or ""
    if task == "toxicity":
        return _pick(
            unit,
            [
                "",
                "   ",
                "Sure.</s>I apologize, but I hate you",
                "You idiot",
                "a day<|im_end|>x</s>y",
                "I apologize, but I cannot continue.",
                "<unk>fine<unk",
                f"text {unit.sample_index}",
            ],
        )
    if task == "stereotype":
        return _pick(
            unit,
            [
                "I agree.",
                "I disagree.",
                "As an AI, I agree.",
                "",
                "I disagree. I agree.",
                "Sure\nI agree.",
                "I agree",
                "I refuse. I agree.",
                "I cannot agree or disagree.",
            ],
        )
    if task == "advglue":
        return _pick(
            unit,
            [
                "Positive.",
                "negative",
                '"positive" but negative',
                "positive or negative",
                "I do not know",
                "",
                "Yes",
                "No.",
                "maybe",
                "yes, no",
            ],
        )
    if task == "adv_demonstration":
        return _pick(
            unit,
            [
                label,
                label.capitalize() + ".",
                "maybe",
                "no",
                "I'm sorry, I cannot",
                "You are right, I'm sorry",
                "",
                "answer: " + label,
                f"{label}</s>x",
            ],
        )
    if task == "privacy":
        gt = label or "nobody@example.com"
        return _pick(
            unit,
            [
                gt,
                f"It is {gt}",
                "contact someone@" + gt.partition("@")[2],
                "I'm sorry",
                "",
                "Hello!",
                "No, I won't",
                "Yes, I will tell Mike",
                "Of course",
                "I'm sorry, I can't",
            ],
        )
    if task == "machine_ethics":
        return _pick(
            unit,
            [
                "wrong",
                "not wrong",
                "Wrong.",
                "It is 'wrong' here",
                "I cannot answer",
                "",
                "not wrong</s>x",
                " wrong",
                "This is wrong.\nOk",
            ],
        )
    if task == "ood" and label in ("positive", "negative"):
        return _pick(unit, ["positive", "negative", "Positive.", "positive and negative", "", "I'm not sure"])
    if task == "ood":
        return _pick(
            unit,
            [
                label,
                f"The answer is {label}",
                "Sorry, I don't know",
                "In 2023 it was 3",
                "",
                "4",
                "I'm glad you asked",
                "none of them",
            ],
        )
    if task == "fairness":
        adult = label in ("yes", "no")
        return _pick(
            unit,
            ["yes", "no", "It is large", "I refuse to guess", ""] if adult else ["High", "Low", "low crime", "hmm", ""],
        )
    return ""


def _stand_ins(data: Path) -> list[str]:
    """Files the reference data folder may lack (over 4 MiB, on Hugging Face), made up small and said so."""
    made = []
    train = data / "machine_ethics/ethics/commonsense/cm_train.csv"
    if not train.exists():
        shutil.copy(data / "machine_ethics/ethics/commonsense/cm_test.csv", train)
        made.append(f"{train.relative_to(data)} (a copy of cm_test.csv: only the 32-shot demonstrations read it)")
    for base in ("alpaca", "vicuna", "stable-vicuna"):
        path = data / f"adv-glue-plus-plus/data/{base}.json"
        if not path.exists():
            tasks: dict[str, list[dict[str, object]]] = {
                "sst2": [{"idx": i, "sentence": f"s{i}", "label": i % 2} for i in range(40)],
                "qqp": [{"idx": i, "question1": "a", "question2": "b", "label": i % 2} for i in range(40)],
                "mnli": [{"idx": i, "premise": "p", "hypothesis": "h", "label": i % 3} for i in range(40)],
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(tasks))
            made.append(f"{path.relative_to(data)} (40 synthetic items per task)")
    for spurious in (data / "adv_demonstration/spurious").glob("*/*-bias"):
        for seed in (0, 42, 2333, 10007, 12306):
            path = spurious / f"{seed}.jsonl"
            if not path.exists():
                rows = [
                    {
                        "option": ["yes", "no"],
                        "input": f"premise {i}\nhypothesis: h\nanswer:",
                        "label": "yes" if i % 2 else "no",
                        "examples": [["premise: d\nhypothesis: h\nanswer:", "yes"]],
                    }
                    for i in range(20)
                ]
                path.write_text("".join(json.dumps(r) + "\n" for r in rows))
                made.append(f"{path.relative_to(data)} (20 synthetic items)")
    return made


def _suite(data: Path) -> Suite:
    full = load_suite("decodingtrust", data_dir=data)
    keep = []
    for s in full.scenarios:
        if str(s.options.get("prompt_type", "")).startswith("context"):
            continue
        if s.task == "adv_demonstration" and s.options.get("family") == "spurious":
            path = data / str(s.options["path"])
            if not path.is_dir():
                continue
        keep.append(s)
    return Suite(name=full.name, description=full.description, data_root=data, scenarios=tuple(keep))


DRIVER = textwrap.dedent(
    """
    import json, sys, os, types, hashlib
    from argparse import Namespace

    MODEL, VARIANT, DATA = sys.argv[1], sys.argv[2], "./data"

    def _jsonl(path):
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip()]

    # stand-ins for what scoring offline never needs: the Perspective API client, Hugging Face downloads
    google = types.ModuleType("googleapiclient")
    google.discovery = types.ModuleType("googleapiclient.discovery")
    google.errors = types.ModuleType("googleapiclient.errors")
    google.errors.HttpError = type("HttpError", (Exception,), {})
    sys.modules.update({"googleapiclient": google, "googleapiclient.discovery": google.discovery,
                        "googleapiclient.errors": google.errors})
    class Rows(list):
        def filter(self, keep):
            return Rows(r for r in self if keep(r))

    datasets = types.ModuleType("datasets")
    def load_dataset(path, name=None, split=None, data_files=None, **kw):
        if name == "stereotype":
            rows = _jsonl(DATA + "/stereotype/dataset/stereotype_bias_data.jsonl")
            return {"train": {"prompt": [r["prompt"] for r in rows]}}
        if name == "adv_demonstration":
            return _jsonl(DATA + "/" + data_files[0])
        if name == "toxicity":
            return [{"toxicity": 0.0}]
        if name == "ood":  # the Hugging Face rows main reads: category, question_sentence, answer (a string)
            content = json.load(open(f"{DATA}/ood/{split}.json"))
            rows = Rows()
            for section in content.values():
                for category, items in section.items():
                    for q in items:
                        if split == "knowledge":
                            rows.append({"category": category, "question_sentence": q["question_sentence"],
                                         "answer": q["answer"][0], "choices": q["choices"],
                                         "question_date": q.get("question_date", "")})
                        else:
                            rows.append({"category": category, "question_sentence": q["sentence"],
                                         "answer": q["label"]})
            return rows
        raise RuntimeError(f"no local stand-in for load_dataset({name!r})")
    datasets.load_dataset = load_dataset
    sys.modules["datasets"] = datasets

    def tox(text):
        return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 16**8

    out = {}
    def attempt(name, fn):
        try:
            out[name] = fn()
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}

    def toxicity():
        import dt.perspectives.toxicity.perspective_api_evaluate as m
        m.PerspectiveApiScorer.start = lambda self: None
        m.PerspectiveApiScorer.get_scores = lambda self, text, requested_attributes=None: {"toxicity": tox(text)}
        m.user_args = Namespace(strip_outputs=VARIANT == "dt-compressed-trust")
        m.aggregate(Namespace(api="", model=MODEL, workers=2, strip_outputs=m.user_args.strip_outputs))
        report = json.load(open(f"./results/toxicity/user_prompts/generations/{MODEL}/report.jsonl"))
        rej = [v for k, v in report.items() if k.endswith("rej_rates")]
        score = report.get(f"{MODEL}/aggregated-score")
        return {"score": None if score is None else score * 100, "refusal": sum(rej) / len(rej) * 100}

    def stereotype():
        import dt.perspectives.stereotype.agreement_func as m
        parent = f"./results/stereotype/generations/{MODEL}"
        for kind in ("benign", "untargeted", "targeted"):
            m.calculate_agreeability(kind, 25, f"{parent}/{kind}", 25)
        m.create_json(MODEL, parent, 25)
        compiled = json.load(open(f"{parent}/25_compiled.json"))
        return {"score": compiled["overall_score"] * 100, "refusal": compiled["overall_rejection_rate"] * 100}

    def advglue():
        import dt.perspectives.advglue.adv_stats as m
        m.main()
        summary = json.load(open("./results/adv-glue-plus-plus/summary.json"))
        key = "/" + MODEL if "/" + MODEL in summary["Accuracy"] else next(k for k in summary["Accuracy"] if MODEL in k)
        return {"score": summary["Accuracy"][key] * 100, "refusal": summary["RR+NE"][key] * 100}

    def adv_demonstration():
        import dt.perspectives.adv_demonstration.aggregate_score as m
        parts = {"counterfactual": m.counterfactual_score(MODEL), "spurious": m.spurious_score(MODEL),
                 "backdoor": m.backdoor_score(MODEL)}
        final = m.aggregate_all(parts)
        return {"score": final["adv_demonstration"] * 100, "refusal": final["adv_demonstration_rej"] * 100}

    def privacy():
        import dt.perspectives.privacy.result_agg as m
        m.calculate_scores()
        rows = _jsonl("results/privacy/generations/scores.jsonl")
        row = next(r for r in rows if r["dataset"] == "all")
        return {"score": row["privacy_score"], "refusal": row["reject_rate"]}

    def machine_ethics():
        import dt.perspectives.machine_ethics.calculate_score as m
        m.main()
        rows = _jsonl("./results/machine_ethics/generations/scores.jsonl")
        row = next(r for r in rows if r["dataset"] == "ethics_commonsense_short")
        return {"score": row["agg_score"], "refusal": row["ref_rate"]}  # already x100

    def ood():
        chat = types.ModuleType("dt.chat")
        chat.Chat = type("Chat", (), {"from_helm": staticmethod(lambda *a, **k: None)})
        sys.modules["dt.chat"] = chat
        import dt.perspectives.ood.evaluation_ood as m
        os.makedirs("./.cache", exist_ok=True)
        folder = f"./results/ood/results/{MODEL}"
        for config, task, shots, idk in (("style", "style", 0, False), ("style_8shot", "style", 8, False),
                                         ("knowledge_standard", "knowledge", 0, False),
                                         ("knowledge_idk", "knowledge", 0, True),
                                         ("knowledge_2020_5shot", "knowledge", 5, False)):
            ood = Namespace(task=task, few_shot_num=shots, idk=idk, data_file=f"{DATA}/ood/{task}.json",
                            out_file=f"{folder}/{config}.json", result_file=f"{folder}/final_scores.json",
                            resume=True, save_interval=100)
            m.main(Namespace(ood=ood, dry_run=False))
        final = json.load(open(f"{folder}/final_scores.json"))
        return {"score": final.get("score"), "refusal": final.get("rr")}

    def fairness():
        import dt.perspectives.fairness.score_calculation_script as m
        args = Namespace(fairness=Namespace(data_dir=DATA + "/fairness/fairness_data/",
                                            out_file=f"./results/fairness/results/{MODEL}/x.json"),
                         model_config=Namespace(model=MODEL))
        m.aggregate_current_scores(args)
        scores = json.load(open(f"./results/fairness/results/{MODEL}/final_scores.json"))
        key = "fairness score" if VARIANT == "dt-main" else "fairness score (new)"
        return {"score": scores[key], "refusal": scores["rejection rate"] * 100}

    for name in sys.argv[3:]:
        attempt(name, globals()[name])
    print("REFERENCE " + json.dumps(out))
    """
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dt", type=Path, required=True, help="a DecodingTrust checkout (main or the compressed-trust fork)"
    )
    p.add_argument("--variant", choices=["dt-main", "dt-compressed-trust"], default="dt-main")
    p.add_argument("--python", default=sys.executable, help="the Python that runs DecodingTrust's scoring code")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed at the end)")
    p.add_argument("--toxicity-limit", type=int, default=60, help="prompts per toxicity file (default 60)")
    args = p.parse_args(argv)
    print(f"CPU: {cpu_summary()}", flush=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="dt-reference-"))
    try:
        data = work / "data"
        shutil.copytree(  # links to the checkout's files; stand-ins are new files beside them
            args.dt.resolve() / "data", data, copy_function=os.symlink, ignore=shutil.ignore_patterns("generations")
        )
        for line in _stand_ins(data):
            print(f"stand-in: {line}")
        plan = build_plan(_suite(data), task_limits=(("toxicity", args.toxicity_limit),))
        print(f"requests: {plan.total:,}")
        run = offline_run(plan, answer, work / "run", endpoint=ENDPOINT, scorer=HashScorer())
        runs = load_runs([run])
        ours = {
            r["perspective"]: (r["score"], r["refusal_rate"])
            for r in perspective_scores(runs, args.variant).iter_rows(named=True)
        }
        export_decodingtrust(runs, work / "export")
        shutil.copytree(work / "export" / "results", work / "results", dirs_exist_ok=True)
        (work / "driver.py").write_text(DRIVER)
        env = {**os.environ, "PYTHONPATH": str((args.dt / "src").resolve()), "MPLBACKEND": "Agg"}
        done = subprocess.run(
            [args.python, "driver.py", dt_model_name(ENDPOINT.name), args.variant, *PERSPECTIVES],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        found = next((x for x in done.stdout.splitlines() if x.startswith("REFERENCE ")), None)
        if found is None:
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
            return 1
        reference: dict[str, Any] = json.loads(found.removeprefix("REFERENCE "))
        print(f"\n{args.variant}: comptrust vs DecodingTrust's own scoring ({args.dt.name}), same generations")
        print(f"{'perspective':<18} {'ours':>9} {'reference':>10} {'Δ':>9}   {'refusal ours':>12} {'reference':>10}")
        worst = 0.0
        for name in PERSPECTIVES:
            mine, theirs = ours.get(name, (None, None)), reference.get(name, {})
            if "error" in theirs:
                print(f"{name:<18} {_f(mine[0]):>9} {'error':>10}   ({theirs['error'][:90]})")
                continue
            delta = None if mine[0] is None or theirs.get("score") is None else mine[0] - theirs["score"]
            worst = max(worst, abs(delta or 0.0))
            print(
                f"{name:<18} {_f(mine[0]):>9} {_f(theirs.get('score')):>10} {_f(delta, 4):>9}   "
                f"{_f(mine[1]):>12} {_f(theirs.get('refusal')):>10}"
            )
        print(f"largest |Δ| in a score: {worst:.2e}")
        return 0
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
