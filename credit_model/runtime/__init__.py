"""What the roles run at serving time: the Concrete runtime (keys, encryption, decryption), the server circuit, keygen."""
