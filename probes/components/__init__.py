"""Components: classification, the migration map and localization scores."""
