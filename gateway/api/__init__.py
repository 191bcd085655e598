"""HTTP layer: dependencies, response models and one router per resource."""
