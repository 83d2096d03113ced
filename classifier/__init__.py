"""SEM image classifier: a plain Python package (no Django).

Kept deliberately empty: importing ``classifier`` must stay cheap for the web
process, so torch and fastai are imported lazily inside the modules that need
them (train, engine, artifact.build_model).
"""
