"""`cai eval`: how good are the labels? Each kind of label `cai` makes, measured against labels people gave.

data       labelled pairs, answers and solutions, checked record by record; the data's fingerprint
metrics    the arithmetic: strict accuracy, one-order and one-principle accuracy, consistency, ECE, sections,
           RewardBench 2's best-of-4 and Ties, the GRM's k-scaling table
run        an evaluation through the run lifecycle (checked before the engine starts, resumable with --out)
judge      `cai eval judge`: the RL stage's judge on labelled pairs
pm         `cai eval pm`: a trained preference model on labelled pairs
answers    `cai eval self`: self-evaluation's P(True) on labelled answers
steps      `cai eval steps`: the step judge, or a trained PRM, on labelled steps
pik        `cai eval pik`: a trained P(IK) head against the share of a prompt's samples that were right
bestofn    `cai eval bestofn`: each way of choosing among N samples (every signal, majority) against pass@1/N
report     the terminal tables and the plots
"""
