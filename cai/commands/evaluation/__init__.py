"""`cai eval`: how good are the labels? Each kind of label `cai` makes, measured against labels people gave.

data       labelled pairs and answers, checked record by record
metrics    the arithmetic: strict accuracy, one-order and one-principle accuracy, consistency, ECE, sections
judge      `cai eval judge`: the RL stage's judge on labelled pairs (a resumable run)
pm         `cai eval pm`: a trained preference model on labelled pairs
answers    `cai eval self`: self-evaluation's P(True) on labelled answers
report     the terminal table and the plot
"""
