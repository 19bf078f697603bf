"""Training a grid point or a pack of them: point.py (a point's state), backends.py (how K points'
nets run), loop.py (the one training step and epoch), data.py (MNIST), scoring.py (the scorer)."""
