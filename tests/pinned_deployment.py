"""The deployment the protocol, fault, hostile and CLI tests run on, named rather than left to the default.

They test the wire, the roles and the runner, not a model: they run on the kaggle tree, whose 38 MB evaluation key
keeps real-FHE tests to seconds, and whose applicants are the top-level shipped scenarios. The default deployment
(credit_model.deployment.DEFAULT, the logistic one: a 469 MB key, about a minute of keygen) is checked by
test_deployment, and its own shipped scenarios run in real FHE in test_deployments."""

TREE = "kaggle"
