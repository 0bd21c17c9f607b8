"""Learning-rate schedules: the rate of every optimiser step as a function of the step alone.

A schedule is a small object whose ``lr(step, base_lr, steps_per_epoch, total_steps)``
gives the rate of step ``step`` (counted from 0 over the whole run). Because it depends on
nothing else, a resumed run needs no schedule state: it recomputes the rate of the step it
is at.

- ``exponential``: ``base_lr * decay**epoch``, constant within an epoch (``decay`` 1 keeps
  the rate constant). The config's ``training.lr_decay`` is its ``decay``.
- ``cosine``: a linear warm-up over the first ``warmup`` fraction of the steps, from
  ``base_lr / warmup_steps`` up to ``base_lr``, then half a cosine wave down to
  ``final * base_lr`` at the last step (Loshchilov and Hutter's SGDR, without restarts).
- ``onecycle``: Smith's one-cycle policy as PyTorch's ``OneCycleLR`` computes it (cosine
  annealing, two phases): from ``base_lr / div_factor`` up to ``base_lr`` over the first
  ``pct_start`` of the steps, then down to ``base_lr / (div_factor * final_div_factor)``.
"""

import math


class Schedule:
    kind = None

    def lr(self, step, base_lr, steps_per_epoch, total_steps):
        raise NotImplementedError

    def settings(self):
        """The constructor's arguments, for the config and the checkpoint."""
        return {}

    def spec(self):
        return {"name": self.kind, **self.settings()}


def _fraction(name, value, *, closed=True):
    value = float(value)
    if not (0 <= value <= 1 if closed else 0 <= value < 1):
        bound = "]" if closed else ")"
        raise ValueError(f"{name} must be in [0, 1{bound}, got {value!r}")
    return value


class Exponential(Schedule):
    """base_lr * decay**epoch, with epoch = step // steps_per_epoch."""

    kind = "exponential"

    def __init__(self, decay=1.0):
        decay = float(decay)
        if not 0 < decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {decay!r}")
        self.decay = decay

    def lr(self, step, base_lr, steps_per_epoch, total_steps):
        return base_lr * self.decay ** (step // steps_per_epoch)

    def settings(self):
        return {"decay": self.decay}


class Cosine(Schedule):
    """Linear warm-up, then cosine decay to ``final * base_lr``."""

    kind = "cosine"

    def __init__(self, warmup=0.0, final=0.0):
        self.warmup = _fraction("warmup", warmup, closed=False)
        self.final = _fraction("final", final)

    def lr(self, step, base_lr, steps_per_epoch, total_steps):
        warm = round(self.warmup * total_steps)
        if step < warm:
            return base_lr * (step + 1) / warm
        span = max(total_steps - 1 - warm, 1)
        progress = min((step - warm) / span, 1.0)
        low = self.final * base_lr
        return low + (base_lr - low) * (1 + math.cos(math.pi * progress)) / 2

    def settings(self):
        return {"warmup": self.warmup, "final": self.final}


class OneCycle(Schedule):
    """PyTorch's OneCycleLR rates (anneal_strategy 'cos', three_phase False), max_lr = base_lr."""

    kind = "onecycle"

    def __init__(self, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
        self.pct_start = _fraction("pct_start", pct_start)
        self.div_factor, self.final_div_factor = float(div_factor), float(final_div_factor)
        for name, value in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
            if not float(value) >= 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")

    def lr(self, step, base_lr, steps_per_epoch, total_steps):
        initial = base_lr / self.div_factor
        low = initial / self.final_div_factor
        peak_step = self.pct_start * total_steps - 1  # the step at which the rate peaks
        if step <= peak_step:
            start, end, pct = initial, base_lr, step / peak_step if peak_step > 0 else 1.0
        else:
            span = (total_steps - 1) - peak_step
            start, end, pct = base_lr, low, (step - peak_step) / span if span > 0 else 1.0
        return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)

    def settings(self):
        return {
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }


SCHEDULES = {cls.kind: cls for cls in (Exponential, Cosine, OneCycle)}


def get(name, **settings):
    """A new schedule of the kind called ``name``; ValueError for an unknown one."""
    try:
        cls = SCHEDULES[name]
    except KeyError:
        known = ", ".join(sorted(SCHEDULES))
        raise ValueError(f"unknown schedule {name!r} (known: {known})") from None
    return cls(**settings)
