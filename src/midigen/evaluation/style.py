"""Style fidelity: does a clip generated with `--style X` sound like style X?

A small style classifier over musical features of a MIDI file's notes. It is trained on
real music of a `<root>/<style>/**/*.mid` corpus and answers, for any MIDI file, how
likely each known style is.

Features (`FEATURE_NAMES`, one fixed-length float vector per file, `note_features`):
every one is a share, a histogram that sums to 1, or a per-beat rate, so an 8-bar clip
and a whole piece of the same music score alike (length-invariant). Times are in beats
(ticks / ticks per beat), never seconds, so the tempo does not matter. A file without
notes gives all zeros (finite).

    pc_0..pc_11            duration-weighted pitch-class histogram, rotated so that 0 is the
                           tonic of the best-fitting key (`metrics.key_and_in_scale`)
    key_minor, in_scale    that key is minor (0/1); share of notes in its scale
    chord_ic_1..6          interval classes (minor 2nd .. tritone) between pitch classes
                           sounding together at each onset, a histogram over those pairs
    chord_onsets           share of onsets at which 2 or more notes sound
    melodic_interval_-12..+12
                           the melody's (top line, `metrics.melody`) steps in semitones,
                           larger leaps clipped to +-12
    ioi_<beats>            inter-onset intervals between distinct onsets, by nearest note
                           value (16th-triplet .. whole and longer); ioi_other: none within 6%
    duration_<beats>       note lengths, the same bins
    onset_on_beat, onset_8th, onset_16th, onset_triplet, onset_other
                           where notes start within the beat (share of notes)
    log_notes_per_beat, log_onsets_per_beat, log_polyphony, silence
                           rates over the music's span (first onset .. last offset); polyphony
                           is `metrics.polyphony` (time-weighted); silence: share of the span
                           with nothing sounding
    pitch_mean, melody_mean, pitch_spread, pitch_range_90
                           register (mean pitch, mean melody pitch: (p - 60) / 12), spread
                           (std / 12) and the 5th..95th percentile range / 12: percentiles,
                           not max - min, which grows with a file's length

Generated clips are 8 bars; real files are whole pieces. `excerpts` cuts a piece into
8-bar windows so that the classifier is trained, and its held-out accuracy measured, on
clips of the length it will judge: `held_out_accuracy` on held-out real excerpts is the
ceiling that generated clips are compared with.

`StyleClassifier` is multinomial logistic regression (softmax, L2 penalty on the weights)
over standardised features, classes weighted by their inverse frequency, fitted by
accelerated full-batch gradient descent in numpy: deterministic, no scipy needed. It is
saved as plain JSON (no pickle) so it can travel inside a model bundle.

Evaluation layer: numpy, symusic (through `midigen.data.midi_io.read_midi`) and stdlib; no torch,
Lightning, Hydra or MLflow, and nothing from `midigen.train` or `midigen.producer`.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from midigen.data.midi_io import BEATS_PER_BAR, read_midi
from midigen.errors import MidigenError, MidiReadError
from midigen.evaluation.metrics import (
    MELODY_ONSET_TOLERANCE_BEATS,
    NOTE_NAMES,
    key_and_in_scale,
    melody,
    midi_files,
    note_arrays,
    polyphony,
)

MAX_INTERVAL = 12
# Note values in beats (a beat is a quarter note) for the IOI and duration histograms; the
# last bin takes everything from a whole note up.
NOTE_VALUES = (("16th_triplet", 1 / 6), ("16th", 1 / 4), ("8th_triplet", 1 / 3), ("8th", 1 / 2),
               ("quarter_triplet", 2 / 3), ("dotted_8th", 3 / 4), ("quarter", 1.0), ("dotted_quarter", 1.5),
               ("half", 2.0), ("dotted_half", 3.0), ("whole_or_longer", 4.0))
NOTE_VALUE_TOLERANCE = math.log(1.06)  # 2/3 and 3/4 beat are 12% apart
ONSET_POSITIONS = ("on_beat", "8th", "16th", "triplet", "other")
POSITION_TOLERANCE_BEATS = 1 / 48  # as `metrics.on_grid`


def _feature_names() -> tuple[str, ...]:
    names = [f"pc_{i}" for i in range(12)] + ["key_minor", "in_scale"]
    names += [f"chord_ic_{i}" for i in range(1, 7)] + ["chord_onsets"]
    names += [f"melodic_interval_{i:+d}" if i else "melodic_interval_0" for i in range(-MAX_INTERVAL, MAX_INTERVAL + 1)]
    names += [f"ioi_{name}" for name, _ in NOTE_VALUES] + ["ioi_other"]
    names += [f"duration_{name}" for name, _ in NOTE_VALUES] + ["duration_other"]
    names += [f"onset_{name}" for name in ONSET_POSITIONS]
    names += ["log_notes_per_beat", "log_onsets_per_beat", "log_polyphony", "silence"]
    names += ["pitch_mean", "melody_mean", "pitch_spread", "pitch_range_90"]
    return tuple(names)


FEATURE_NAMES = _feature_names()
N_FEATURES = len(FEATURE_NAMES)


# --- features -------------------------------------------------------------------------------


def note_features(on_ticks, off_ticks, pitches, ticks_per_beat: float) -> np.ndarray:
    """The style features (float64, shape (N_FEATURES,), named by FEATURE_NAMES) of notes.

    `on_ticks`, `off_ticks`: note starts and ends in ticks, any order, overlaps allowed;
    `pitches`: MIDI note numbers. No notes: all zeros.
    """
    on, off, pitch, tpb = note_arrays(on_ticks, off_ticks, pitches, ticks_per_beat)
    if on.size == 0:
        return np.zeros(N_FEATURES)
    order = np.lexsort((pitch, on))
    on, off, pitch = on[order], np.maximum(off[order], on[order]), pitch[order]
    on_beats, off_beats = on / tpb, off / tpb
    length = off_beats - on_beats
    groups = _onset_groups(on_beats)  # start of each distinct onset, beats
    line = melody(on, pitch, tpb)  # the top line's pitches
    parts = [
        _tonal(pitch, length, off - on),
        _harmony(on_beats, off_beats, pitch, groups),
        _melodic_intervals(line),
        _note_value_histogram(np.diff(groups)),
        _note_value_histogram(length),
        _onset_positions(on_beats),
        _rates(on, off, tpb, groups),
        _register(pitch, line),
    ]
    features = np.concatenate(parts)
    assert features.shape == (N_FEATURES,)
    return np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)


def file_features(path: str | Path) -> np.ndarray:
    """`note_features` of a MIDI file's non-drum notes (MidiReadError if it cannot be read)."""
    return note_features(*read_midi(path).as_tuple())


def _onset_groups(on_beats: np.ndarray) -> np.ndarray:
    """Distinct onsets (sorted input): an onset within 1/16 beat of the previous joins it."""
    first = np.concatenate([[True], np.diff(on_beats) >= MELODY_ONSET_TOLERANCE_BEATS])
    return on_beats[first]


def _normalised(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts, dtype=np.float64)


def _tonal(pitch: np.ndarray, length: np.ndarray, length_ticks: np.ndarray) -> np.ndarray:
    key, in_scale = key_and_in_scale(pitch, length_ticks)
    tonic_name, mode = key.split()
    tonic = NOTE_NAMES.index(tonic_name)
    # A note's weight is its length, floored at a 16th so that staccato notes still count.
    histogram = np.bincount((pitch - tonic) % 12, weights=np.maximum(length, 0.25), minlength=12)
    return np.concatenate([_normalised(histogram), [float(mode == "minor"), in_scale]])


def _harmony(on_beats, off_beats, pitch, groups) -> np.ndarray:
    """Interval-class histogram of the pitch classes sounding together at each onset, and
    the share of onsets where 2+ notes sound."""
    probe = groups + MELODY_ONSET_TOLERANCE_BEATS  # just after the onset: a rolled chord has arrived
    first = np.searchsorted(probe, on_beats, side="left")  # first onset at which the note sounds
    last = np.searchsorted(probe, off_beats, side="left")  # first onset at which it has ended
    change = np.zeros((groups.size + 1, 12))
    np.add.at(change, (first, pitch % 12), 1.0)
    np.add.at(change, (last, pitch % 12), -1.0)
    sounding = np.cumsum(change, axis=0)[:-1]  # (onsets, 12): notes of each pitch class sounding
    present = sounding > 0.5
    pairs = np.array([(present & np.roll(present, -ic, axis=1)).sum() for ic in range(1, 7)], dtype=np.float64)
    pairs[5] /= 2  # a tritone pair is counted from both of its notes
    chord_onsets = float(np.mean(sounding.sum(axis=1) >= 2)) if groups.size else 0.0
    return np.concatenate([_normalised(pairs), [chord_onsets]])


def _melodic_intervals(line) -> np.ndarray:
    steps = np.clip(np.diff(line), -MAX_INTERVAL, MAX_INTERVAL) + MAX_INTERVAL
    return _normalised(np.bincount(steps, minlength=2 * MAX_INTERVAL + 1).astype(np.float64))


def _note_value_histogram(beats: np.ndarray) -> np.ndarray:
    """Histogram of lengths in beats over NOTE_VALUES, with a last bin for none within 6%."""
    counts = np.zeros(len(NOTE_VALUES) + 1)
    beats = beats[beats > 0]
    if beats.size:
        values = np.log([value for _, value in NOTE_VALUES])
        logs = np.log(beats)
        distance = np.abs(logs[:, None] - values[None, :])
        nearest = distance.argmin(axis=1)
        near = distance[np.arange(beats.size), nearest] <= NOTE_VALUE_TOLERANCE
        longest = logs >= values[-1] - NOTE_VALUE_TOLERANCE
        bins = np.where(longest, len(NOTE_VALUES) - 1, np.where(near, nearest, len(NOTE_VALUES)))
        counts = np.bincount(bins, minlength=len(NOTE_VALUES) + 1).astype(np.float64)
    return _normalised(counts)


def _onset_positions(on_beats) -> np.ndarray:
    """Share of notes starting on the beat, on the off-beat 8th, on a 16th, on a triplet, elsewhere."""
    phase = on_beats - np.floor(on_beats)

    def near(*fractions):
        return np.any([np.abs(phase - f) <= POSITION_TOLERANCE_BEATS for f in fractions], axis=0)

    on_beat = near(0.0, 1.0)
    eighth = near(0.5) & ~on_beat
    sixteenth = near(0.25, 0.75) & ~on_beat & ~eighth
    triplet = near(1 / 3, 2 / 3) & ~on_beat & ~eighth & ~sixteenth
    other = ~(on_beat | eighth | sixteenth | triplet)
    return np.array([m.mean() for m in (on_beat, eighth, sixteenth, triplet, other)])


def _rates(on, off, tpb: float, groups) -> np.ndarray:
    """Notes and distinct onsets per beat, log polyphony, share of silence; over the span
    from the first onset to the last offset (ticks, sorted by onset)."""
    span_ticks = float(off.max() - on.min())
    span = max(span_ticks / tpb, 1.0)  # at least a beat: one short note is not a flood
    sounding = polyphony(on, off)
    reach = np.maximum.accumulate(off)
    gaps = float(np.maximum(on[1:] - reach[:-1], 0.0).sum())
    return np.array([math.log1p(on.size / span), math.log1p(groups.size / span),
                     math.log(max(sounding or 1.0, 1.0)), gaps / span_ticks if span_ticks > 0 else 0.0])


def _register(pitch, line) -> np.ndarray:
    low, high = np.percentile(pitch, [5, 95])
    return np.array([(pitch.mean() - 60) / 12, (line.mean() - 60) / 12, pitch.std() / 12, (high - low) / 12])


# --- excerpts -------------------------------------------------------------------------------


def excerpts(notes, bars: int = 8, count: int | None = 4, seed: int = 0) -> list[tuple]:
    """Up to `count` windows of `bars` 4/4 bars of a piece, each shaped like `notes`.

    `notes`: (on_ticks, off_ticks, pitches, ticks_per_beat) as `midi_io.MidiNotes.as_tuple`
    gives them. Windows start on 4/4 bar lines counted from tick 0 and are chosen at random
    (`seed`) among those that start at or before the last onset's bar and hold a note;
    they may overlap. A window keeps the notes that start inside it, moved to start at
    tick 0, with note-offs cut at its end, as a generated clip ends on its last bar line.
    A piece shorter than `bars` bars is one excerpt, itself. `count=None`: every window.
    """
    on, off, pitch, tpb = notes
    on, off, pitch = (np.asarray(a, dtype=np.int64).ravel() for a in (on, off, pitch))
    if bars < 1:
        raise ValueError(f"bars={bars}: must be 1 or more")
    if on.size == 0:
        return []
    bar = BEATS_PER_BAR * tpb
    window = bars * bar
    if int(on.max()) < window and int(on.min()) >= 0:
        return [(on, off, pitch, tpb)]
    first_bar, last_bar = int(on.min() // bar), int(on.max() // bar)
    starts = np.arange(first_bar, max(last_bar - bars + 1, first_bar) + 1) * bar
    held = [s for s in starts if np.any((on >= s) & (on < s + window))]
    if count is not None and len(held) > count:
        chosen = np.random.default_rng(seed).choice(len(held), size=count, replace=False)
        held = [held[i] for i in np.sort(chosen)]
    windows = []
    for start in held:
        inside = (on >= start) & (on < start + window)
        windows.append((on[inside] - start, np.minimum(off[inside], start + window) - start, pitch[inside], tpb))
    return windows


# --- the classifier -------------------------------------------------------------------------

FORMAT = "midigen.style_classifier"
FORMAT_VERSION = 1


class StyleClassifier:
    """Softmax regression from `note_features` to styles.

    Features are standardised with the training set's mean and standard deviation; the loss
    is the class-weighted mean cross-entropy (each style weighs the same in total, however
    many examples it has) plus `l2` / 2 times the squared weights (not the biases).
    """

    def __init__(self, l2: float = 1e-2, max_iter: int = 5000, tol: float = 1e-7):
        if not l2 > 0:
            raise ValueError(f"l2={l2}: must be positive (it keeps the fit unique and deterministic)")
        self.l2, self.max_iter, self.tol = float(l2), int(max_iter), float(tol)
        self.styles: list[str] = []
        self.feature_names: tuple[str, ...] = FEATURE_NAMES
        self.mean = np.zeros(N_FEATURES)
        self.scale = np.ones(N_FEATURES)
        self.weights = np.zeros((N_FEATURES, 0))  # (F, S)
        self.bias = np.zeros(0)  # (S,)
        self.info: dict = {}  # how it was trained and what it scored: free-form JSON

    # fitting

    def fit(self, features, labels: Iterable[str], styles: Iterable[str] | None = None) -> "StyleClassifier":
        """Fit on `features` (N, F) and one style name per row; `styles` fixes the class order
        (default: the labels' sorted names). Returns self."""
        x = np.asarray(features, dtype=np.float64)
        labels = list(labels)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(f"features of shape {x.shape}: expected (N, {len(self.feature_names)})")
        if len(labels) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} feature rows but {len(labels)} labels")
        self.styles = list(styles) if styles is not None else sorted(set(labels))
        unknown = sorted(set(labels) - set(self.styles))
        if unknown:
            raise ValueError(f"labels {unknown} are not among styles {self.styles}")
        if len(set(labels)) < 2:
            raise MidigenError(f"a style classifier needs examples of at least 2 styles, got {sorted(set(labels))}")
        y = np.array([self.styles.index(label) for label in labels])
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)
        self.scale = np.where(std > 1e-9, std, 1.0)
        z = (x - self.mean) / self.scale
        counts = np.bincount(y, minlength=len(self.styles)).astype(np.float64)
        class_weight = np.where(counts > 0, len(y) / (np.count_nonzero(counts) * np.maximum(counts, 1)), 0.0)
        self.weights, self.bias, iterations = _fit_softmax(z, y, class_weight[y], len(self.styles), self.l2,
                                                           self.max_iter, self.tol)
        self.info = {**self.info, "train_examples": {s: int(c) for s, c in zip(self.styles, counts)},
                     "iterations": iterations}
        return self

    # prediction

    def decision_function(self, features) -> np.ndarray:
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if x.shape[1] != len(self.feature_names):
            raise ValueError(f"features of shape {x.shape}: expected (N, {len(self.feature_names)})")
        return ((x - self.mean) / self.scale) @ self.weights + self.bias  # (N, S)

    def predict_proba(self, features) -> np.ndarray:
        """Probability of each style (columns in `styles` order), shape (N, S)."""
        self._check_fitted()
        return _softmax(self.decision_function(features))

    def predict(self, features) -> list[str]:
        return [self.styles[i] for i in self.predict_proba(features).argmax(axis=1)]

    def score(self, features, labels: Iterable[str]) -> float:
        """Accuracy: the share of rows whose most likely style is their label."""
        labels = list(labels)
        if not labels:
            return 0.0
        return float(np.mean([p == t for p, t in zip(self.predict(features), labels)]))

    def per_style_accuracy(self, features, labels: Iterable[str]) -> dict[str, float]:
        """{style: accuracy on the rows labelled with it} for the styles that have rows."""
        labels = list(labels)
        predicted = self.predict(features) if labels else []
        return {style: float(np.mean([p == style for p, t in zip(predicted, labels) if t == style]))
                for style in self.styles if style in labels}

    def _check_fitted(self) -> None:
        if not self.styles:
            raise MidigenError("this style classifier is not fitted: call fit() or StyleClassifier.load(path)")

    # JSON

    def to_dict(self) -> dict:
        self._check_fitted()
        return {"format": FORMAT, "version": FORMAT_VERSION, "styles": list(self.styles),
                "feature_names": list(self.feature_names), "l2": self.l2,
                "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "bias": self.bias.tolist(), "info": self.info}

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "style classifier") -> "StyleClassifier":
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise MidigenError(f"{source}: not a midigen style classifier (no \"format\": \"{FORMAT}\")")
        if data.get("version") != FORMAT_VERSION:
            raise MidigenError(f"{source}: style classifier format version {data.get('version')}; this midigen "
                               f"reads version {FORMAT_VERSION}: refit it with fit_from_corpus")
        if list(data["feature_names"]) != list(FEATURE_NAMES):
            raise MidigenError(f"{source}: fitted on other features than this midigen computes; "
                               "refit it with fit_from_corpus")
        model = cls(l2=float(data["l2"]))
        model.styles = [str(s) for s in data["styles"]]
        model.mean = np.asarray(data["mean"], dtype=np.float64)
        model.scale = np.asarray(data["scale"], dtype=np.float64)
        model.weights = np.asarray(data["weights"], dtype=np.float64).reshape(N_FEATURES, len(model.styles))
        model.bias = np.asarray(data["bias"], dtype=np.float64).reshape(len(model.styles))
        model.info = dict(data.get("info") or {})
        return model

    def save(self, path: str | Path) -> Path:
        """Write as JSON (floats written exactly: a loaded copy predicts identical probabilities)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "StyleClassifier":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise MidigenError(f"{path}: cannot read the style classifier ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise MidigenError(f"{path}: not a JSON style classifier ({exc})") from None
        return cls.from_dict(data, source=str(path))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _fit_softmax(z, y, sample_weight, n_styles: int, l2: float, max_iter: int, tol: float):
    """Weighted softmax regression by Nesterov-accelerated gradient descent with restarts.

    The loss is smooth with a Lipschitz gradient bounded by 1/2 * the largest eigenvalue of
    the weighted [z, 1] Gram matrix + l2, so a fixed step of 1/L always descends; with the
    L2 term the loss is strongly convex and the minimum is unique. Returns (W, b, iterations).
    """
    n, f = z.shape
    design = np.hstack([z, np.ones((n, 1))])  # (N, F+1): the last column is the bias
    sample_weight = sample_weight / sample_weight.sum()
    onehot = np.eye(n_styles)[y]  # (N, S)
    gram = design.T @ (design * sample_weight[:, None])
    step = 1.0 / (0.5 * float(np.linalg.eigvalsh(gram).max()) + l2)
    penalty = np.ones((f + 1, 1))
    penalty[-1] = 0.0  # the bias is not penalised

    def loss_and_gradient(theta):
        logits = design @ theta  # (N, S)
        logits -= logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(axis=1, keepdims=True))
        log_p = logits - log_norm
        loss = -float((sample_weight * (onehot * log_p).sum(axis=1)).sum()) + 0.5 * l2 * float((penalty * theta**2).sum())
        gradient = design.T @ ((np.exp(log_p) - onehot) * sample_weight[:, None]) + l2 * penalty * theta
        return loss, gradient

    theta = np.zeros((f + 1, n_styles))
    previous, momentum_point, t = theta, theta, 1.0
    loss, _ = loss_and_gradient(theta)
    iterations = 0
    for iterations in range(1, max_iter + 1):
        _, gradient = loss_and_gradient(momentum_point)
        candidate = momentum_point - step * gradient
        new_loss, new_gradient = loss_and_gradient(candidate)
        if new_loss > loss:  # momentum overshot: restart from the last iterate
            momentum_point, t = theta, 1.0
            continue
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        previous, theta = theta, candidate
        momentum_point = theta + ((t - 1) / t_next) * (theta - previous)
        t, loss = t_next, new_loss
        if float(np.abs(new_gradient).max()) < tol:
            break
    return theta[:-1].copy(), theta[-1].copy(), iterations


# --- corpora and folders --------------------------------------------------------------------

Splits = Mapping[str, str] | Callable[[str], str] | None


def corpus_examples(root: str | Path, split: str = "train", splits: Splits = None, styles: Iterable[str] | None = None,
                    bars: int | None = 8, per_file: int | None = 8, whole_files: bool = False,
                    val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0):
    """Feature rows of the files of one split of a `<root>/<style>/**/*.mid` corpus.

    `splits`: {relative path: split}, or a function of the relative path (forward slashes,
    e.g. "chorale/bwv1.6.mid"), or None for the split training uses
    (`midigen.data.cache.assign_splits` over the readable files with notes, `val_fraction`,
    `test_fraction`). Each file gives `per_file` random `bars`-bar `excerpts` (seeded by
    `seed` and its path; bars=None: none) and, with `whole_files`, its whole notes too.
    Returns (features (N, F), labels, rels: the file of each row).
    """
    from midigen.data.cache import assign_splits, list_corpus

    wanted = None if styles is None else set(styles)
    usable = []
    for cf in list_corpus(root):
        if wanted is not None and cf.style not in wanted:
            continue
        try:
            notes = read_midi(cf.path).as_tuple()
        except MidiReadError:
            continue
        if notes[0].size:
            usable.append((cf, notes))
    if splits is None:
        table = assign_splits([cf.rel for cf, _ in usable], val_fraction, test_fraction)
        split_of_rel = table.get
    elif callable(splits):
        split_of_rel = splits
    else:
        split_of_rel = splits.get
    rows, labels, rels = [], [], []
    for cf, notes in usable:
        if split_of_rel(cf.rel) != split:
            continue
        clips = [notes] if whole_files else []
        if bars is not None:
            clips += excerpts(notes, bars=bars, count=per_file, seed=seed ^ zlib.crc32(cf.rel.encode()))
        for clip in clips:
            rows.append(note_features(*clip))
            labels.append(cf.style)
            rels.append(cf.rel)
    features = np.array(rows).reshape(len(rows), N_FEATURES)
    return features, labels, rels


def fit_from_corpus(root: str | Path, splits: Splits = None, styles: Iterable[str] | None = None, bars: int | None = 8,
                    per_file: int | None = 8, whole_files: bool = False, l2: float = 1e-2,
                    val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> StyleClassifier:
    """A StyleClassifier fitted on the TRAIN split of a corpus only (see `corpus_examples`).

    By default on 8 random 8-bar excerpts of each training file: the length of the clips it
    will judge. `styles`: the style folders to use (default: all). The training options
    are kept in the classifier's `info`.
    """
    features, labels, _ = corpus_examples(root, "train", splits, styles, bars, per_file, whole_files,
                                          val_fraction, test_fraction, seed)
    if not labels:
        raise MidigenError(f"{root}: no readable MIDI file with notes in the train split")
    model = StyleClassifier(l2=l2)
    model.info = {"bars": bars, "per_file": per_file, "whole_files": whole_files, "seed": seed,
                  "val_fraction": val_fraction, "test_fraction": test_fraction}
    return model.fit(features, labels)


def held_out_accuracy(classifier: StyleClassifier, root: str | Path, split: str = "test", splits: Splits = None,
                      bars: int | None = None, per_file: int | None = None, seed: int | None = None,
                      val_fraction: float | None = None, test_fraction: float | None = None) -> dict[str, float]:
    """{style: share of the held-out `split`'s excerpts classified as their own style}.

    Excerpts, split fractions and seed default to those the classifier was fitted with
    (its `info`), so the held-out files are the ones fitting never saw; a classifier fitted
    with explicit `splits` needs the same `splits` here.
    """
    features, labels, _ = held_out_examples(classifier, root, split, splits, bars, per_file, seed, val_fraction,
                                            test_fraction)
    if not labels:
        raise MidigenError(f"{root}: no readable MIDI file with notes in the {split} split")
    return classifier.per_style_accuracy(features, labels)


def held_out_examples(classifier: StyleClassifier, root: str | Path, split: str = "test", splits: Splits = None,
                      bars: int | None = None, per_file: int | None = None, seed: int | None = None,
                      val_fraction: float | None = None, test_fraction: float | None = None):  # noqa: ANN201
    """`corpus_examples` of the held-out `split` as `held_out_accuracy` scores them: (features,
    labels, rels), with the excerpts and split the classifier was fitted with unless given."""
    info = classifier.info
    bars = info.get("bars", 8) if bars is None else bars
    per_file = info.get("per_file", 8) if per_file is None else per_file
    seed = info.get("seed", 0) if seed is None else seed
    val_fraction = info.get("val_fraction", 0.1) if val_fraction is None else val_fraction
    test_fraction = info.get("test_fraction", 0.1) if test_fraction is None else test_fraction
    return corpus_examples(root, split, splits, classifier.styles, bars, per_file, bars is None, val_fraction,
                           test_fraction, seed)


def classify_files(classifier: StyleClassifier, paths, expected: str | None = None) -> dict:
    """The style of each MIDI file, and the folder's summary.

    `paths`: a folder (its MIDI files, recursively; names relative to it), one file, or a
    list of files (names: their file names). Returns
    {"files": {name: {"style", "probabilities": {style: p}}},
     "folder": {"n_files", "counts": {style: files classified so}, "mean_probabilities",
                "majority": the most common style (ties: the higher mean probability)},
     "skipped": {name: reason}}: unreadable files and files without notes (silence has no
    style). With `expected` (e.g. the `--style` a folder was generated with), "folder" also
    holds "fidelity": the share of files classified as it, and "expected_probability": its
    mean probability.
    """
    classifier._check_fitted()
    if expected is not None and expected not in classifier.styles:
        raise MidigenError(f"style {expected!r} is not known to this classifier (it knows {classifier.styles})")
    if isinstance(paths, (str, Path)):
        base = Path(paths).expanduser()
        files = midi_files(base)
        names = [f.name if base.is_file() else f.relative_to(base).as_posix() for f in files]
    else:
        files = [Path(p) for p in paths]
        names = [f.name for f in files]
        if len(set(names)) < len(names):  # the same name in two folders: tell them apart
            names = [str(f) for f in files]
    rows, kept, skipped = [], [], {}
    for name, path in zip(names, files):
        try:
            notes = read_midi(path).as_tuple()
        except MidiReadError as exc:
            skipped[name] = str(exc).split(": ", 1)[-1]
            continue
        if notes[0].size == 0:
            skipped[name] = "no notes"
            continue
        rows.append(note_features(*notes))
        kept.append(name)
    probabilities = classifier.predict_proba(np.array(rows)) if rows else np.zeros((0, len(classifier.styles)))
    result_files = {}
    for name, p in zip(kept, probabilities):
        result_files[name] = {"style": classifier.styles[int(p.argmax())],
                              "probabilities": {s: float(v) for s, v in zip(classifier.styles, p)}}
    counts = {s: sum(r["style"] == s for r in result_files.values()) for s in classifier.styles}
    mean = probabilities.mean(axis=0) if rows else np.zeros(len(classifier.styles))
    mean_probabilities = {s: float(v) for s, v in zip(classifier.styles, mean)}
    majority = max(classifier.styles, key=lambda s: (counts[s], mean_probabilities[s])) if rows else None
    folder = {"n_files": len(kept), "counts": counts, "mean_probabilities": mean_probabilities, "majority": majority}
    if expected is not None:
        folder["fidelity"] = counts[expected] / len(kept) if kept else 0.0
        folder["expected_probability"] = mean_probabilities[expected]
    return {"files": result_files, "folder": folder, "skipped": skipped}
