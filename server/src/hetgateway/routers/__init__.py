"""One router per resource: health, models, predictions, metrics."""
