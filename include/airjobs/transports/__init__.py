"""How the core reaches hosts: ``local`` (this host) now; SSH/SFTP through the providers' hooks later."""
