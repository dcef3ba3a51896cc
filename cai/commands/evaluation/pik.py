"""`cai eval pik`: a trained P(IK) value head (train-pm --kind pik) on questions whose samples were graded: how well
its P(IK) predicts the share of the model's answers that are right (Brier, ECE) and separates right answers from
wrong ones (AUROC, Kadavath et al.'s measure)."""

from __future__ import annotations

from cai.train import pik


def evaluate(model: str, data: str, batch_size: int = 16) -> dict:
    from cai.signals.rewardmodels import PIK, check_pm

    check_pm(model, "--pm", PIK)
    rows, ungraded = pik.load_rows(data)
    predicted = pik.scores(model, [q.prompt for q in rows], batch_size)
    report = pik.metrics(predicted, rows)
    report.update(
        pm=model,
        data=data,
        ungraded=ungraded,
        n=len(rows),
        predicted="predicted P(IK)",
    )
    return report
