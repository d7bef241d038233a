"""Networks: the cell registry (torch-free), the recurrent runner and the classifier."""
