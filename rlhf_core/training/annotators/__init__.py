"""How reward-model training treats the people behind the judgments (`reward.annotator_model`): with
"crowd_bt", CrowdBT's per-annotator reliability η and left-side bias λ are estimated around each training
(`crowd_weights`: before it from the frozen features or the previous version, after it from the trained
model's scores), turned into per-judgment Bradley-Terry weights, and stored with the reward-model version.
"""
