"""afdian (爱发电): the order webhook (`webhook.py`, `POST /pay/afdian`) and the signed order look-up
(`api.py`)."""
