"""Development and demonstration tools: the embedded Airflow, a local S3 server, the demo and the
shared real data's locations."""
