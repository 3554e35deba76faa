"""Answers from a study: n₀, best K, WRN width vs depth, EDFs, Pareto fronts, fidelity checks.

Compute, then draw: `answers.analyze` runs the estimators below on a study's `TrialRecord`s into one
`StudyAnalysis`; `plots` and `report` only read it.

    stats       bootstrap over seeds, t-widened intervals, seeded streams
    candidates  trials → candidates (seeds of one name), budget order, block kind
    threshold   n₀, where multi-branch starts to beat plain
    best        best K, best WRN width × depth
    landscape   EDFs, Pareto fronts, error vs path length
    fidelity    rank agreement of ASHA's rungs with the final error

Rules shared by every answer:
- Only full-fidelity COMPLETE trials with a finite value feed them (`TrialRecord.usable`); pruned,
  failed and reduced-fidelity trials never do. A question without such trials returns a result with
  status "insufficient" and the reason, never a guess or an exception.
- Trials with the same canonical name are seeds of one candidate. A candidate's error is the mean
  over its seeds.
- Intervals are t-widened percentile bootstraps over seeds (`stats`). A candidate with one seed does
  not vary; results report `min_seeds` / `n` so a reader can tell.
- Every bootstrap takes a `seed`; each question draws from its own stream, so adding a question does
  not change another's numbers.
"""
