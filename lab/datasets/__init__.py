"""Token datasets, prompt sets, outcome spellings and the shipped suites."""
