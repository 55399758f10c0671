"""The built-in models' model-card writer; ``results/`` holds the zoo training run's report and log."""
