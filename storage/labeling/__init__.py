"""The annotation flow's rows: samples and pairs as the sampler writes them (`pairs`), serving a pair
to an annotator with its lease and recording a verdict or a skip (`serving`), taking the last verdict
back within its window (`undo`), and control pairs with a known answer mixed into annotators' streams
(`controls`).
"""
