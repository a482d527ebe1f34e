"""The worker: a supervisor in the server's event loop and the model in a spawned child."""
