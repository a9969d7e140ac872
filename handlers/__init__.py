"""The platform edge: the Flask app factory and one module per platform (inbound and outbound)."""
