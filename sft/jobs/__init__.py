"""What each command runs once Hydra has composed its config: `train_job`, `evaluate`, `predict`,
`export`. The entry points (sft/train.py, ...) import these only then, so that a command's
--help, --cfg job and a mistaken override answer before torch and Lightning load."""
