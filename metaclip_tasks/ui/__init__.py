"""What the Airflow UI's curation view shows, read from the artifact store (no Airflow imports)."""
