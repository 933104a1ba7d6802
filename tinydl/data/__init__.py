"""tinydl.data: datasets and the DataLoader."""
