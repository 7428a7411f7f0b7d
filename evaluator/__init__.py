"""The FHE evaluator role: holds evaluation keys and ciphertexts per session and runs the circuit."""
