"""The core: component contracts, the problem, trials, search spaces and run events."""
