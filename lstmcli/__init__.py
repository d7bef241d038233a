"""lstmcli: train, evaluate, diagnose and serve recurrent-network sentiment classifiers."""

__version__ = "0.1.0"
