"""Methods built on the loop: meta-learning, learned inner components and the source papers' recipes."""
