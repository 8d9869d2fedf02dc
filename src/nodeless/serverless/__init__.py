"""What makes a pod serverless: instance specs, sizing, annotations, admission.

Pure rules, no I/O beyond reading the spec catalogue file: the scheduler,
the apiserver's admission chain and the billing ledger all decide from the
same catalogue and the same reading of a pod.
"""
