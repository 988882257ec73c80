#!/usr/bin/env python3
"""Leave-one-dataset-out check of a learned routing component (numpy only).

Trains a logistic model over hashed word uni- and bigrams (2^18 buckets) plus ln(1 + chars)
on two of RouteLLM's benchmarks and scores the third, by RouteLLM's protocol (10 qcut bins).
Label: the strong model beats the weak one on the prompt (strong > weak). Each training
dataset gets the same total weight.

    python3 scripts/lodo_ngram_check.py [--data ../shared/routing-eval/routellm-gpt4-vs-mixtral.jsonl]
        [--held-out mmlu gsm8k]

By default only the MMLU and GSM8K legs are scored (train on the other two benchmarks, which
includes MT-Bench's labels): the MT-Bench leg is a scoring of MT-Bench and counts against the
budget of frozen designs scored there. Nothing is written to the repository.
"""
import argparse
import json
import re
import zlib

import numpy as np

BITS = 18
WORD = re.compile(r"[a-z][a-z']*|\d+")


def hashed(text):
    words = WORD.findall(text[:16384].lower())
    grams = words + [a + " " + b for a, b in zip(words, words[1:])]
    return np.unique([zlib.crc32(g.encode()) & ((1 << BITS) - 1) for g in grams])


def load(path):
    ds = {}
    for line in open(path, encoding="utf-8"):
        r = json.loads(line)
        if r.get("routellm_contaminated"):
            continue
        ds.setdefault(r["dataset"], []).append(r)
    return ds


def metrics(strong, weak, s, seed=0x5EED):
    s = s + 1e-6 * np.random.default_rng(seed).random(len(s))
    ss = np.sort(s)
    pts = []
    for i in range(11):
        t = np.quantile(ss, i / 10)
        m = s >= t if i < 10 else s > t
        pts.append((100 * m.mean(), np.where(m, strong, weak).mean()))
    pts.sort()
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    S, W = strong.mean(), weak.mean()
    area = lambda v: np.sum((x[1:] - x[:-1]) / 100 * (v[1:] + v[:-1]) / 2)
    apgr = (area(y) - area(np.full_like(y, W))) / (area(np.full_like(y, S)) - area(np.full_like(y, W)))
    return apgr, np.interp(0.5 * (S - W) + W, y, x)


def train(examples, epochs=5, lr=0.1, l2=1e-6, seed=1):
    """examples: list of (indices, ln_len, label, weight). Adagrad SGD on the logistic loss."""
    w = np.zeros(1 << BITS)
    g2 = np.full(1 << BITS, 1e-8)
    wl = bl = 0.0
    gl = gb = 1e-8
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for i in rng.permutation(len(examples)):
            idx, ln_len, y, wt = examples[i]
            z = w[idx].sum() + wl * ln_len + bl
            p = 1 / (1 + np.exp(-np.clip(z, -30, 30)))
            g = wt * (p - y)
            gi = g + l2 * w[idx]
            g2[idx] += gi * gi
            w[idx] -= lr * gi / np.sqrt(g2[idx])
            gl += (g * ln_len) ** 2
            wl -= lr * g * ln_len / np.sqrt(gl)
            gb += g * g
            bl -= lr * g / np.sqrt(gb)
    return w, wl, bl


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/routing-eval/routellm-gpt4-vs-mixtral.jsonl")
    ap.add_argument("--held-out", nargs="+", default=["mmlu", "gsm8k"])
    args = ap.parse_args()
    ds = load(args.data)
    feats = {
        k: [(hashed(r["prompt"]), np.log1p(len(r["prompt"])), float(r["strong"] > r["weak"])) for r in rows]
        for k, rows in ds.items()
    }
    for test in args.held_out:
        train_sets = [k for k in ds if k != test]
        examples = []
        for k in train_sets:
            n = len(feats[k])
            examples += [(i, l, y, 1000.0 / n) for i, l, y in feats[k]]
        w, wl, bl = train(examples)
        s = np.array([w[i].sum() + wl * l + bl for i, l, _ in feats[test]])
        strong = np.array([r["strong"] for r in ds[test]], float)
        weak = np.array([r["weak"] for r in ds[test]], float)
        apgr, cpt = metrics(strong, weak, s)
        print(f"held out {test:8s} trained on {'+'.join(train_sets):16s} APGR {apgr:.3f}  CPT(50%) {cpt:.1f}%")


if __name__ == "__main__":
    main()
