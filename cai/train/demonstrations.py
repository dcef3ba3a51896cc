"""InstructGPT's reward normalisation for `train-pm --reward-norm demonstrations`: the run's demonstrations and the
offset that gives them mean reward 0.

Ouyang et al. 2022 §3.5: "since the RM loss is invariant to shifts in reward, we normalize the reward model
using a bias so that the labeler demonstrations achieve a mean score of 0 before doing RL". Here the
demonstrations are the SL stage's SFT completions (the final revisions, or the text `--keep` chose), the text the
SFT model learns to write, in the same run folder as the preferences; the rewards are only shifted, not scaled, as
the paper does. The default (`held-out`) is cai's own: standard units of the held-out compared responses.
"""

from __future__ import annotations

from cai.errors import CaiError

NORMS = ("held-out", "demonstrations")
SPLIT = "sft"


def load(source: str) -> list[tuple[list[dict], str]]:
    """(prompt messages, demonstration) of every SFT row of the run `source`, with its review decisions applied.
    Refused, naming why, where there are none: checked before any model loads."""
    from cai.core.store import RunStore
    from cai.train.data import reviewed_split

    flag = "--reward-norm demonstrations"
    if not RunStore.is_run(source):
        raise CaiError(
            f"{flag}: {source} is not a cai run folder; the demonstrations are a run's {SPLIT} split "
            "(cai generate --stage sl into the run that holds the preferences)"
        )
    if not RunStore(source).count(SPLIT):
        raise CaiError(
            f"{flag}: the run {source} has no {SPLIT} rows (the SL stage's revisions, cai generate --stage sl): "
            "no demonstrations to give mean 0"
        )
    out = []
    for where, r in reviewed_split(source, SPLIT):
        prompt, completion = r.get("prompt"), r.get("completion")
        if not prompt or not completion or not isinstance(completion, list) or not completion[-1].get("content"):
            raise CaiError(f"{where}: a demonstration needs a prompt and a non-empty completion")
        out.append(([dict(m) for m in prompt], str(completion[-1]["content"])))
    if not out:  # every row dropped by a review
        raise CaiError(f"{flag}: every {SPLIT} row of {source} was dropped in review: no demonstrations left")
    return out


def offset(model, encode, demonstrations: list[tuple[list[dict], str]]) -> float:
    """The mean raw reward of the demonstrations: subtracted from every reward, it gives them mean 0."""
    from cai.signals.rewardmodels import raw_rewards

    raw = raw_rewards(model, encode, demonstrations)
    return sum(raw) / len(raw)
