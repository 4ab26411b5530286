"""The Caseway reference node: federation endpoint, local API, storage, delivery, CLI."""
