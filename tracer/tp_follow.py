"""Tensor-parallel `stepscope run`: the debugger on rank 0, every other rank following it.

Each rank holds a shard of the model, so each forward is a collective: every rank must make the
same calls in the same order. Rank 0 runs the debugger; its live session is wrapped (`Leader`,
`LeaderRun`, `LeaderBranches`) so that a call that runs the model first sends a command to the
other ranks, then runs. The other ranks (`follow`) draw nothing: they take each command and make
the same call on their own session. Both sides make the call through `Runs.execute`.

    Open()                        open the session (load the model's shard), then its BranchSet
    Step(run)                     the next step of run `run` ("" the original, "b1", "b1/b2", ...)
    Settings(run, changes)        sampler settings / token limit from the next step of `run`
    Branch(parent, step, ...)     a branch of run `parent` at `step`: a forced token or text, interventions
    End(code)                     rank 0 has ended with exit status `code`: every rank exits with it

The channel is the process group's key-value store rather than a collective: a rank waits for the
next command as long as the user reads. After each command every rank posts its `Outcome` (its
error, or what it computed: the token chosen, the branch made) and rank 0 compares them:
- all equal (an error every rank had too, e.g. a refused token id): the debugger goes on, the error in
  its dialog;
- different: the ranks no longer hold the same state. Rank 0 ends with one line naming the rank that
  failed first and its error (`Leader.failure`), and every rank exits non-zero.
A rank that fails alone leaves the others waiting inside a forward's collective for it: once the
session is open a collective waits at most COLLECTIVE_S, then fails (gloo; nccl's watchdog ends the
process instead), and that rank posts its outcome too.
"""

from __future__ import annotations

import atexit
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from .branch import BranchSet
from .distributed import check_launched, init
from .internals import default_store
from .interventions import HEAD_KINDS, NEURON_KINDS, Intervention
from .session import LiveSession

COLLECTIVE_S = 60.0  # once the session is open, a collective waits this long for the other ranks
ANSWER_S = 600.0  # a rank waits this long for another's outcome of a command
GONE = "rank0-gone"  # set when rank 0's process exits
IDLE_S = 1.0  # the other ranks wait for the next command in spans of this length (a signal is handled between)


class TensorParallelFailure(RuntimeError):
    """The ranks no longer hold the same session (a rank failed alone, or they computed different things)."""


# -- the commands (plain data) ---------------------------------------------------------------------
@dataclass(frozen=True)
class Open:
    """Open the session (each rank loads its shard) and the BranchSet over it."""


@dataclass(frozen=True)
class Step:
    """Compute the next step of run `run`."""

    run: str


@dataclass(frozen=True)
class Settings:
    """`update_settings(**changes)` on run `run`."""

    run: str
    changes: dict


@dataclass(frozen=True)
class Branch:
    """`BranchSet.branch` of run `parent` at `step`; `interventions` as `plain_intervention` dicts."""

    parent: str
    step: int
    token: int | None = None
    text: str | None = None
    interventions: tuple[dict, ...] = ()
    name: str | None = None
    max_new_tokens: int | None = None
    why: str | None = None


@dataclass(frozen=True)
class End:
    """Rank 0 has ended with exit status `code`."""

    code: int


Command = Open | Step | Settings | Branch | End


@dataclass(frozen=True)
class Outcome:
    """What one rank's call did: its `error` (one line) or None, and `result`: plain values every rank
    must agree on (the token a step chose, the run a branch made)."""

    error: str | None = None
    result: tuple = ()


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# -- interventions on a sharded model --------------------------------------------------------------
SHARDED = {"attn.hook_z": "n_heads", "mlp.hook_post": "d_mlp"}
"""Editable names whose axis 1 (heads, neurons) is split over the ranks -> the model fact of its whole size."""


@dataclass
class ShardedIntervention(Intervention):
    """An intervention on a tensor split over the ranks (head outputs, MLP neurons) as one rank applies
    it: the edit lands in this rank's slice when its head or neuron (or its part of a patched row) is
    here, and nowhere otherwise. Its description and checks are the intervention's own."""

    rank: int = 0
    full: int = 0  # the split axis's whole size (n_heads, d_mlp)

    def edit(self, r: torch.Tensor, start: int) -> None:
        width = r.shape[1]  # this rank's heads or neurons
        if width == self.full:
            super().edit(r, start)
            return
        local = self.local(self.rank * width, width)
        if local is not None:
            local.edit(r, start)

    def local(self, low: int, width: int) -> Intervention | None:
        """The intervention on this rank's slice [low, low + width) of the split axis; None when nothing of it is here."""
        plain = Intervention(**plain_intervention(self))
        if self.kind in HEAD_KINDS:
            assert self.head is not None  # a head intervention names its head
            return replace(plain, head=self.head - low) if low <= self.head < low + width else None
        if self.kind in NEURON_KINDS:
            assert self.index is not None  # a neuron intervention names its neuron
            return replace(plain, index=self.index - low) if low <= self.index < low + width else None
        if self.kind == "patch" and self.vector is not None:
            return replace(plain, vector=self.vector[low : low + width])  # a row [n_heads, d_head] or [d_mlp]
        return plain


def plain_intervention(iv: Intervention) -> dict:
    """An intervention's fields (numbers, strings, a numpy vector): what a command carries."""
    return {f.name: getattr(iv, f.name) for f in fields(Intervention)}


def sharded(fields_: dict, rank: int, size: int, facts: dict) -> Intervention:
    """The intervention of `fields_` as rank `rank` of `size` applies it (`ShardedIntervention` where its tensor is split)."""
    fact = SHARDED.get(fields_["name"])
    if size > 1 and fact is not None and facts.get(fact):
        return ShardedIntervention(**fields_, rank=rank, full=int(facts[fact]))
    return Intervention(**fields_)


# -- one rank's runs ---------------------------------------------------------------------------------
class Runs:
    """The runs of one rank: the session `opener` opens and the BranchSet over it. `execute` makes a
    command's call; rank 0 and the others make every call through it."""

    def __init__(self, opener: Callable[[], LiveSession]):
        self.opener = opener
        self.root: LiveSession | None = None
        self.branches: BranchSet | None = None

    def run(self, key: str):
        """The session of run `key`."""
        if self.branches is not None:
            return self.branches.sessions[key]
        if key or self.root is None:
            raise KeyError(f"no run named {key!r}")
        return self.root

    def execute(self, command: Command) -> tuple[Any, tuple]:
        """Make `command`'s call: (what it returns, the result every rank must agree on)."""
        if isinstance(command, Open):
            root = self.root = self.opener()
            group = dist.group.WORLD
            try:  # the ranks now run in step: a rank that fails alone fails the others' next collective soon
                if group is not None:
                    group.set_timeout(timedelta(seconds=COLLECTIVE_S))
            except RuntimeError:  # a backend that cannot change it keeps the group's timeout
                pass
            try:
                self.branches = BranchSet(root)  # before the first step, as the debugger makes it
            except Exception:  # noqa: BLE001 - branching is optional: the debugger works without it
                self.branches = None
            return root, (tuple(root.prompt_ids), root.max_new_tokens, self.branches is not None)
        if isinstance(command, Step):
            session = self.run(command.run)
            return session.step(), stepped(session)
        if isinstance(command, Settings):
            changes = self.run(command.run).update_settings(**command.changes)
            return changes, tuple(sorted(changes.items()))
        if isinstance(command, Branch):
            if self.branches is None or self.root is None:
                raise RuntimeError("branching is unavailable for this model")
            tp = self.root.tensor_parallel
            rank, size = (tp.rank, tp.size) if tp is not None else (0, 1)
            facts = self.root.writer.manifest["model"]
            ivs = [sharded(dict(f), rank, size, facts) for f in command.interventions]
            session = self.branches.branch(command.step, token=command.token, text=command.text, interventions=ivs,
                                           name=command.name, parent=command.parent,
                                           max_new_tokens=command.max_new_tokens, why=command.why)
            return session, (self.branches.current,)
        raise TypeError(f"not a command: {command!r}")

    def close(self) -> None:
        if self.branches is not None:
            self.branches.close()
        elif self.root is not None:
            self.root.close()


def stepped(session) -> tuple:
    """What a step left that every rank must agree on: steps so far, the last token chosen, the state."""
    session.writer.flush()
    steps = session.writer.manifest["steps"]
    token = steps[-1]["token"]["id"] if steps else None
    return session.steps_started, token, bool(session.finished), session.stop_reason


# -- the channel -------------------------------------------------------------------------------------
class Channel:
    """Commands (rank 0 to the others) and outcomes (every rank) through the process group's store."""

    def __init__(self, store, rank: int, size: int):
        self.store = dist.PrefixStore("stepscope-run", store)
        self.rank, self.size = rank, size
        self.count = 0  # commands sent (rank 0) or taken (the others)

    def _put(self, key: str, value) -> None:
        self.store.set(key, pickle.dumps(value))  # type: ignore[arg-type]  # the store takes bytes; its stub says str

    def _get(self, key: str):
        return pickle.loads(self.store.get(key))  # noqa: S301 - written by a rank of this job

    def say_gone(self) -> None:
        """(rank 0, at exit) This process is ending: the other ranks may end too."""
        try:
            self.store.set(GONE, "")
        except Exception:  # noqa: BLE001 - the store is gone already: nobody is waiting
            pass

    def ready(self, key: str, seconds: float) -> bool:
        """`key` is in the store, waiting up to `seconds` for it."""
        try:
            self.store.wait([key], timedelta(seconds=seconds))
        except dist.DistStoreError:
            return False
        return True

    def send(self, command: Command) -> int:
        index = self.count
        self.count += 1
        if index >= 2:  # every rank has taken command index-2 and rank 0 has read its outcomes
            for key in [f"command/{index - 2}"] + [f"outcome/{index - 2}/{r}" for r in range(self.size)]:
                self.store.delete_key(key)
        self._put(f"command/{index}", command)
        return index

    def take(self) -> tuple[int, Command]:
        index = self.count
        while not self.ready(f"command/{index}", IDLE_S):
            pass
        self.count += 1
        return index, self._get(f"command/{index}")

    def post(self, index: int, outcome: Outcome) -> None:
        self._put(f"outcome/{index}/{self.rank}", outcome)

    def posted(self, index: int, rank: int) -> bool:
        """Rank `rank` has posted its outcome of command `index` (without waiting)."""
        return self.store.check([f"outcome/{index}/{rank}"])

    def outcome(self, index: int, rank: int, seconds: float) -> Outcome | None:
        key = f"outcome/{index}/{rank}"
        return self._get(key) if self.ready(key, seconds) else None


# -- rank 0 --------------------------------------------------------------------------------------------
class Leader:
    """Rank 0's side. Every call that runs the model is `call(command)`: the command is sent, the call
    made, the outcomes compared; one lock, so commands leave in the order the calls run. `failure`
    is the one line that ended the run (then `on_failure(failure)` has been called, once)."""

    def __init__(self) -> None:
        check_launched()
        self.lock = threading.Lock()
        self.channel: Channel | None = None
        self.runs: Runs | None = None
        self.failure: str | None = None
        self.on_failure: Callable[[str], None] | None = None
        self.wrapped: dict[str, LeaderRun] = {}

    def join(self) -> None:
        """Join the process group and open the channel (the other ranks wait for it)."""
        if self.channel is None:
            rank, size = init()
            if rank != 0:
                raise TensorParallelFailure(f"the debugger runs on rank 0, not on rank {rank}")
            self.channel = Channel(default_store(), rank, size)
            atexit.register(self.channel.say_gone)

    def open(self, opener: Callable[[], LiveSession]) -> LeaderRun:
        """Open the session on every rank; the original run, wrapped."""
        self.join()
        self.runs = Runs(opener)
        self.call(Open())
        return self.run_of("")

    def run_of(self, key: str) -> LeaderRun:
        """Run `key`'s session as the debugger sees it (one wrapper per run)."""
        assert self.runs is not None  # open() has run
        session = self.runs.run(key)
        wrapped = self.wrapped.get(key)
        if wrapped is None or wrapped.wrapped_session is not session:
            wrapped = self.wrapped[key] = LeaderRun(self, key, session)
        return wrapped

    def call(self, command: Command):
        """Send `command`, make its call here, compare every rank's outcome: what the call returned,
        its own exception when every rank had the same one, TensorParallelFailure when they differ."""
        with self.lock:
            if self.failure is not None:
                raise TensorParallelFailure(self.failure)
            channel, runs = self.channel, self.runs
            assert channel is not None and runs is not None  # open() has run
            index = channel.send(command)
            error: Exception | None = None
            before: set[int] = set()  # the ranks that had failed (or finished) when this one failed
            try:
                value, result = runs.execute(command)
                mine = Outcome(result=result)
            except Exception as exc:  # noqa: BLE001 - compared with the other ranks' first
                before = {r for r in range(1, channel.size) if channel.posted(index, r)}
                error, value, mine = exc, None, Outcome(error=one_line(exc))
            channel.post(index, mine)
            for rank in range(1, channel.size):
                self._compare(command, rank, mine, channel.outcome(index, rank, ANSWER_S), rank in before)
            if error is not None:
                raise error
            return value

    def _compare(self, command: Command, rank: int, mine: Outcome, theirs: Outcome | None, first: bool) -> None:
        """Fail unless `theirs` (rank `rank`'s outcome) is `mine`; the line names the rank that failed
        first (`first`: rank `rank` had posted its outcome when rank 0's call failed)."""
        if theirs == mine:
            return
        what = type(command).__name__.lower()
        if theirs is None:
            self.fail(f"tensor parallel: rank {rank} did not answer within {ANSWER_S:.0f} s ({what})")
        if theirs.error is not None and (mine.error is None or first):
            self.fail(f"tensor parallel: rank {rank} failed: {theirs.error}")
        if mine.error is not None:
            self.fail(f"tensor parallel: rank 0 failed: {mine.error}")
        self.fail(f"tensor parallel: the ranks diverged ({what}): rank 0 {mine.result!r:.200}, rank {rank} {theirs.result!r:.200}")

    def fail(self, message: str) -> NoReturn:
        """End the run: `failure` set, `on_failure` told once; raises TensorParallelFailure."""
        if self.failure is None:
            self.failure = message
            if self.on_failure is not None:
                self.on_failure(message)
        raise TensorParallelFailure(message)

    def end(self, code: int) -> None:
        """Rank 0 has ended with `code`: the other ranks exit with it."""
        with self.lock:
            if self.channel is not None:
                self.channel.send(End(code))


class LeaderRun:
    """A run of rank 0's session as the debugger sees it: `step` and `update_settings` go to every
    rank; everything else is the session's own (read from it)."""

    def __init__(self, leader: Leader, key: str, session: LiveSession):
        self.leader, self.key, self.wrapped_session = leader, key, session

    def __getattr__(self, name: str):
        return getattr(self.wrapped_session, name)

    def step(self):
        return self.leader.call(Step(self.key))

    def update_settings(self, **changes) -> dict:
        return self.leader.call(Settings(self.key, dict(changes)))

    def run(self, on_step=None) -> None:
        """Generate to the end, every step through `step`."""
        while not self.wrapped_session.finished:
            self.step()
            if on_step is not None:
                on_step(self.wrapped_session.steps_started)

    def branch_set(self) -> LeaderBranches | None:
        """The runs' BranchSet as the debugger sees it; None where branching is unavailable."""
        assert self.leader.runs is not None  # a LeaderRun comes from an opened leader
        return LeaderBranches(self.leader) if self.leader.runs.branches is not None else None


class LeaderBranches:
    """Rank 0's BranchSet as the debugger sees it: `branch` goes to every rank; its runs are `LeaderRun`s."""

    def __init__(self, leader: Leader):
        assert leader.runs is not None and leader.runs.branches is not None  # LeaderRun.branch_set checked
        self.leader, self.inner = leader, leader.runs.branches

    @property
    def current(self) -> str:
        return self.inner.current

    @property
    def session(self) -> LeaderRun:
        return self.leader.run_of(self.inner.current)

    @property
    def sessions(self) -> dict[str, LeaderRun]:
        return {key: self.leader.run_of(key) for key in self.inner.sessions}

    def branch(self, step: int, token: int | None = None, text: str | None = None, interventions=(),
               name: str | None = None, parent: str | None = None, max_new_tokens: int | None = None,
               why: str | None = None) -> LeaderRun:
        command = Branch(self.inner.current if parent is None else parent, step, token, text,
                         tuple(plain_intervention(iv) for iv in interventions), name, max_new_tokens, why)
        self.leader.call(command)
        return self.leader.run_of(self.inner.current)

    def switch(self, name: str) -> LeaderRun:
        self.inner.switch(name)
        return self.leader.run_of(name)

    def list(self) -> list[dict]:
        return self.inner.list()

    def close(self) -> None:
        self.inner.close()


# -- the other ranks ---------------------------------------------------------------------------------
def follow(opener: Callable[[], LiveSession]) -> int:
    """A rank other than 0: make each command's call on this rank's session until rank 0 ends; its
    exit status. Nothing is drawn or printed here."""
    rank, size = init()
    channel = Channel(default_store(), rank, size)
    runs = Runs(opener)
    try:
        while True:
            index, command = channel.take()
            if isinstance(command, End):
                return ended(channel, command.code)
            try:
                mine = Outcome(result=runs.execute(command)[1])
            except Exception as exc:  # noqa: BLE001 - told to rank 0, which decides
                mine = Outcome(error=one_line(exc))
            channel.post(index, mine)
            if mine.error is not None and channel.outcome(index, 0, ANSWER_S) != mine:
                return wait_for_end(channel)  # failed alone: rank 0 ends the run
    finally:
        runs.close()


def wait_for_end(channel: Channel) -> int:
    """(a rank that failed alone) Wait for rank 0 to end, as long as any command may take; exit status 1."""
    deadline = time.monotonic() + ANSWER_S
    while time.monotonic() < deadline:
        if not channel.ready(f"command/{channel.count}", max(deadline - time.monotonic(), 0.001)):
            break
        if isinstance(channel.take()[1], End):
            break
    return ended(channel, 1)


def ended(channel: Channel, code: int) -> int:
    """Rank 0 has ended with `code`. After a failure this rank stays until rank 0's process is gone
    (or torchrun ends this one), so that torchrun never stops rank 0 before it has said why."""
    if code:
        try:
            channel.ready(GONE, ANSWER_S)
        except Exception:  # noqa: BLE001 - the store went with rank 0 (a store rank 0 held)
            pass
    return code


__all__ = ["Branch", "Channel", "Command", "End", "Leader", "LeaderBranches", "LeaderRun", "Open", "Outcome", "Runs",
           "Settings", "ShardedIntervention", "Step", "TensorParallelFailure", "follow", "sharded"]
