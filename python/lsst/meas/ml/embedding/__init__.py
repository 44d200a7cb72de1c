"""Self-supervised galaxy representations: contrastive pre-training, the
``ml_embedding`` task, similarity search and downstream probes.
"""
