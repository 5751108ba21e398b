"""The VirNucPro MLP classifier and its checkpoint formats."""
