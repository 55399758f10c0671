"""PRD benchmark: K-step text → triplane generators at demo size (``fewstep bench prd``)."""
